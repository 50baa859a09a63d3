/* run.c: the second of the two files. Runs a twofiles params file (the first) on a CPU.

   Build:  cc -O3 -o run run.c -lm
   Use:    ./run model.bin -i "1 2 3" [-n 32] [-T 0.8] [-s 42] [-q]
           ./run model.bin -p "Once upon a time" [-n 32]

   -i IDS   prompt as token ids (exact: what `python -m infer` would feed the model)
   -p TEXT  prompt as text, encoded here by merging byte pairs by rank over the whole text (no
            regex pre-split, so ids can differ from the Python tokenizer's at word boundaries)
   -n N     number of tokens to generate (default 32); stops early at the file's eos token
   -T TEMP  temperature (default 0: greedy); -s SEED for sampling
   -q       print generated token ids (space separated) instead of their text

   The model is a Llama-style decoder: RMSNorm, grouped-query attention with rotary positions
   (Hugging Face rotate_half convention), SwiGLU MLP. The file layout is documented in
   infer/twofiles_format.py; everything is float32. No dependencies beyond libc and libm. */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int vocab, dim, layers, heads, kv_heads, ffn, max_seq, tied, bos, eos, add_bos;
    double theta, eps;
} Config;

typedef struct {
    float *embed;      /* [V, D] */
    float *attn_norm;  /* [L, D] */
    float *wq;         /* [L, H*K, D] */
    float *wk;         /* [L, G*K, D] */
    float *wv;         /* [L, G*K, D] */
    float *wo;         /* [L, D, H*K] */
    float *mlp_norm;   /* [L, D] */
    float *w_gate;     /* [L, F, D] */
    float *w_up;       /* [L, F, D] */
    float *w_down;     /* [L, D, F] */
    float *final_norm; /* [D] */
    float *unembed;    /* [V, D] (the embedding when tied) */
} Weights;

typedef struct {
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2, *logits; /* activations of one token */
    float *key_cache, *value_cache;                             /* [L, S, G*K] */
} State;

typedef struct {
    char **bytes; /* token id -> its bytes */
    int *len, *special;
    int *sorted;  /* non-special ids sorted by bytes, for lookup while encoding */
    int n_sorted;
} Vocab;

static void die(const char *msg) { fprintf(stderr, "run: %s\n", msg); exit(1); }

static uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static double f64(const unsigned char *p) { double v; memcpy(&v, p, 8); return v; }

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the params file");
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size);
    if (!data || fread(data, 1, *size, f) != *size) die("cannot read the params file");
    fclose(f);
    return data;
}

static void parse_header(const unsigned char *d, size_t size, Config *c) {
    if (size < 256 || memcmp(d, "TWOF", 4) != 0 || u32(d + 4) != 1)
        die("not a version-1 twofiles params file");
    int *fields[] = {&c->vocab, &c->dim, &c->layers, &c->heads, &c->kv_heads, &c->ffn,
                     &c->max_seq, &c->tied};
    for (int i = 0; i < 8; i++) *fields[i] = (int)u32(d + 8 + 4 * i);
    c->theta = f64(d + 40);
    c->eps = f64(d + 48);
    c->bos = (int32_t)u32(d + 56);
    c->eos = (int32_t)u32(d + 60);
    c->add_bos = (int)u32(d + 64);
}

static void map_weights(unsigned char *d, size_t size, const Config *c, Weights *w) {
    size_t D = c->dim, L = c->layers, K = c->dim / c->heads, HK = c->heads * K,
           GK = c->kv_heads * K, F = c->ffn, V = c->vocab;
    float *p = (float *)(d + u64(d + 72));
    w->embed = p;      p += V * D;
    w->attn_norm = p;  p += L * D;
    w->wq = p;         p += L * HK * D;
    w->wk = p;         p += L * GK * D;
    w->wv = p;         p += L * GK * D;
    w->wo = p;         p += L * D * HK;
    w->mlp_norm = p;   p += L * D;
    w->w_gate = p;     p += L * F * D;
    w->w_up = p;       p += L * F * D;
    w->w_down = p;     p += L * D * F;
    w->final_norm = p; p += D;
    w->unembed = c->tied ? w->embed : p;
    if (!c->tied) p += V * D;
    if ((unsigned char *)p - d != (long)u64(d + 80) || u64(d + 80) > size)
        die("weights do not match the header (truncated or corrupted file)");
}

static Vocab *cmp_vocab; /* qsort has no context argument in C99 */

static int cmp_ids(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    int n = cmp_vocab->len[x] < cmp_vocab->len[y] ? cmp_vocab->len[x] : cmp_vocab->len[y];
    int r = memcmp(cmp_vocab->bytes[x], cmp_vocab->bytes[y], n);
    return r ? r : cmp_vocab->len[x] - cmp_vocab->len[y];
}

static void read_vocab(unsigned char *d, size_t size, Vocab *v) {
    unsigned char *p = d + u64(d + 80);
    int n = (int)u32(p), plen = (int)u32(p + 4);
    p += 8 + plen; /* the pre-tokenizer regex is for Python; this runner does not use it */
    v->bytes = malloc(n * sizeof(char *));
    v->len = malloc(n * sizeof(int));
    v->special = malloc(n * sizeof(int));
    v->sorted = malloc(n * sizeof(int));
    v->n_sorted = 0;
    for (int i = 0; i < n; i++) {
        if (p + 5 > d + size) die("tokenizer section is truncated");
        v->special[i] = p[0];
        v->len[i] = (int)u32(p + 1);
        v->bytes[i] = (char *)p + 5;
        p += 5 + v->len[i];
        if (!v->special[i]) v->sorted[v->n_sorted++] = i;
    }
    cmp_vocab = v;
    qsort(v->sorted, v->n_sorted, sizeof(int), cmp_ids);
}

/* The id of a byte string, or -1: binary search over the sorted vocabulary. */
static int lookup(Vocab *v, const char *s, int len) {
    int lo = 0, hi = v->n_sorted - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, id = v->sorted[mid];
        int n = len < v->len[id] ? len : v->len[id];
        int r = memcmp(s, v->bytes[id], n);
        if (!r) r = len - v->len[id];
        if (!r) return id;
        if (r < 0) hi = mid - 1; else lo = mid + 1;
    }
    return -1;
}

/* Byte-pair encoding by rank (rank = id): repeatedly merge the adjacent pair whose
   concatenation is the lowest-ranked token. */
static int encode(Vocab *v, const char *text, int *ids) {
    int n = (int)strlen(text);
    int *start = malloc(n * sizeof(int)), *size = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) { start[i] = i; size[i] = 1; }
    for (;;) {
        int best = -1, best_id = 0;
        for (int i = 0; i + 1 < n; i++) {
            int id = lookup(v, text + start[i], size[i] + size[i + 1]);
            if (id >= 0 && (best < 0 || id < best_id)) { best = i; best_id = id; }
        }
        if (best < 0) break;
        size[best] += size[best + 1];
        memmove(start + best + 1, start + best + 2, (n - best - 2) * sizeof(int));
        memmove(size + best + 1, size + best + 2, (n - best - 2) * sizeof(int));
        n--;
    }
    for (int i = 0; i < n; i++) ids[i] = lookup(v, text + start[i], size[i]);
    free(start); free(size);
    return n;
}

static void rmsnorm(float *out, const float *x, const float *gain, int n, double eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / n + (float)eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * gain[i];
}

/* out[i] = sum_j w[i, j] x[j] for w [rows, cols] */
static void matmul(float *out, const float *x, const float *w, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += row[j] * x[j];
        out[i] = sum;
    }
}

/* Rotates each head's halves (x1, x2) by position-dependent angles: rotate_half convention. */
static void rope(float *vec, int n_heads, int head_dim, int pos, double theta) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + h * head_dim;
        for (int i = 0; i < half; i++) {
            float inv_freq = (float)pow(theta, -2.0 * i / head_dim);
            float angle = (float)pos * inv_freq, c = cosf(angle), s = sinf(angle);
            float a = v[i], b = v[i + half];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* One token at position pos through the model; leaves next-token logits in s->logits. */
static void forward(const Config *c, const Weights *w, State *s, int token, int pos) {
    int D = c->dim, H = c->heads, G = c->kv_heads, K = D / H, F = c->ffn, S = c->max_seq;
    int HK = H * K, GK = G * K;
    memcpy(s->x, w->embed + (size_t)token * D, D * sizeof(float));
    for (int l = 0; l < c->layers; l++) {
        rmsnorm(s->xb, s->x, w->attn_norm + (size_t)l * D, D, c->eps);
        float *k = s->key_cache + ((size_t)l * S + pos) * GK;
        float *v = s->value_cache + ((size_t)l * S + pos) * GK;
        matmul(s->q, s->xb, w->wq + (size_t)l * HK * D, HK, D);
        matmul(k, s->xb, w->wk + (size_t)l * GK * D, GK, D);
        matmul(v, s->xb, w->wv + (size_t)l * GK * D, GK, D);
        rope(s->q, H, K, pos, c->theta);
        rope(k, G, K, pos, c->theta);
        for (int h = 0; h < H; h++) {
            int g = h / (H / G); /* the kv head this query head shares */
            float *q = s->q + h * K, *att = s->att;
            for (int t = 0; t <= pos; t++) {
                float *kt = s->key_cache + ((size_t)l * S + t) * GK + g * K, dot = 0.0f;
                for (int i = 0; i < K; i++) dot += q[i] * kt[i];
                att[t] = dot / sqrtf((float)K);
            }
            softmax(att, pos + 1);
            float *out = s->xb2 + h * K;
            memset(out, 0, K * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                float *vt = s->value_cache + ((size_t)l * S + t) * GK + g * K;
                for (int i = 0; i < K; i++) out[i] += att[t] * vt[i];
            }
        }
        matmul(s->xb, s->xb2, w->wo + (size_t)l * D * HK, D, HK);
        for (int i = 0; i < D; i++) s->x[i] += s->xb[i];
        rmsnorm(s->xb, s->x, w->mlp_norm + (size_t)l * D, D, c->eps);
        matmul(s->hb, s->xb, w->w_gate + (size_t)l * F * D, F, D);
        matmul(s->hb2, s->xb, w->w_up + (size_t)l * F * D, F, D);
        for (int i = 0; i < F; i++) {
            float g = s->hb[i];
            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i]; /* silu(gate) * up */
        }
        matmul(s->xb, s->hb, w->w_down + (size_t)l * D * F, D, F);
        for (int i = 0; i < D; i++) s->x[i] += s->xb[i];
    }
    rmsnorm(s->xb, s->x, w->final_norm, D, c->eps);
    matmul(s->logits, s->xb, w->unembed, c->vocab, D);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

static uint64_t rng_state;
static float random_unit(void) { /* xorshift64*, uniform in [0, 1) */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((rng_state * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

static int sample(float *logits, int n, float temperature) {
    if (temperature <= 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= temperature;
    softmax(logits, n);
    float r = random_unit(), cdf = 0.0f;
    for (int i = 0; i < n; i++) { cdf += logits[i]; if (r < cdf) return i; }
    return n - 1;
}

static float *alloc(size_t n) {
    float *p = calloc(n, sizeof(float));
    if (!p) die("out of memory");
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: run model.bin (-i \"IDS\" | -p TEXT) [-n N] [-T TEMP] [-s SEED] [-q]");
    const char *ids_arg = NULL, *text = NULL;
    int steps = 32, print_ids = 0;
    float temperature = 0.0f;
    rng_state = 42;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-q")) { print_ids = 1; continue; }
        if (i + 1 >= argc) die("every option except -q takes a value");
        if (!strcmp(argv[i], "-i")) ids_arg = argv[++i];
        else if (!strcmp(argv[i], "-p")) text = argv[++i];
        else if (!strcmp(argv[i], "-n")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-T")) temperature = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "-s")) rng_state = (uint64_t)atoll(argv[++i]) | 1;
        else die("unknown option");
    }
    size_t size;
    unsigned char *data = read_file(argv[1], &size);
    Config c; Weights w; Vocab vocab;
    parse_header(data, size, &c);
    map_weights(data, size, &c, &w);
    read_vocab(data, size, &vocab);

    int *prompt = malloc((c.max_seq + 1) * sizeof(int)), n_prompt = 0;
    if (ids_arg) { /* ids are taken exactly as given */
        char *end, *p = (char *)ids_arg;
        for (long id = strtol(p, &end, 10); end != p; id = strtol(p, &end, 10)) {
            if (id < 0 || id >= c.vocab || n_prompt >= c.max_seq) die("bad or too many prompt ids");
            prompt[n_prompt++] = (int)id;
            p = end;
        }
    } else if (text) {
        if ((int)strlen(text) + 1 > c.max_seq) die("prompt longer than the context");
        if (c.add_bos && c.bos >= 0) prompt[n_prompt++] = c.bos;
        n_prompt += encode(&vocab, text, prompt + n_prompt);
    }
    if (n_prompt == 0) die("give a prompt with -i IDS or -p TEXT");
    if (n_prompt + steps > c.max_seq) steps = c.max_seq - n_prompt;

    int K = c.dim / c.heads, GK = c.kv_heads * K;
    State s = {alloc(c.dim), alloc(c.dim), alloc(c.dim), alloc(c.heads * K), NULL, NULL,
               alloc(c.max_seq), alloc(c.ffn), alloc(c.ffn), alloc(c.vocab),
               alloc((size_t)c.layers * c.max_seq * GK), alloc((size_t)c.layers * c.max_seq * GK)};
    for (int pos = 0; pos < n_prompt - 1; pos++) forward(&c, &w, &s, prompt[pos], pos);
    int token = prompt[n_prompt - 1];
    for (int pos = n_prompt - 1, made = 0; made < steps; pos++, made++) {
        forward(&c, &w, &s, token, pos);
        token = sample(s.logits, c.vocab, temperature);
        if (token == c.eos) break;
        if (print_ids) printf(made ? " %d" : "%d", token);
        else if (!vocab.special[token]) fwrite(vocab.bytes[token], 1, vocab.len[token], stdout);
        fflush(stdout);
    }
    printf("\n");
    return 0;
}
