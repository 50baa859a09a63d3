// Causal self-attention for training with bf16 inputs, forward and backward: the bf16 twin of
// flash_attention.cc (same semantics, same FFI arguments but bf16 q, k, v and dout; float32
// out, lse and gradients), called by infer/kernels/flash_attention.py when the model's compute
// dtype is bf16 and the CPU has AVX512_BF16. The tile products run on one of two engines,
// picked per CPU when a job starts (bf16_engine.h):
//
//   - Intel AMX tiles (tdpbf16ps) where the CPU has AMX-BF16 and Linux grants the tile data;
//   - AVX512_BF16's vdpbf16ps in register blocks (DotProduct) elsewhere, e.g. AMD Zen 4 / 5.
//
// TWOFILES_CPU_ISA=avx512 takes the vdpbf16ps engine on an AMX CPU too (so its test runs
// there); avx2 turns the kernel off (flash_attention.py then runs the float32 kernel).
//
// Why AMX where it exists: on this project's Xeon (family 6 model 167, 2 cores) one core ran
// 225 GFLOP/s of float32 FMAs, 114 of vdpbf16ps and 3370 of AMX's tdpbf16ps (register-only
// loops, /tmp microbenchmark, under the lock). At AMX's rate the 64 x 64 tile products are
// cheap; the time goes to the elementwise work around them (exp, masks, bf16 conversion, the
// operand layouts), which is written in AVX-512 here. On an AMD EPYC Zen 5 (family 26 model
// 2) vdpbf16ps does twice float32's multiply-adds per instruction at the same issue rate
// (XLA's bf16 GEMMs there: ~850 GFLOP/s on 2 cores against ~410 in float32), so the same
// layouts serve it: vdpbf16ps wants B in the very pair layout AMX's tiles do.
//
// Every product is C[M][N] (+)= A[M][k] B[k][N] with A in rows (the contraction contiguous) and
// B in AMX's pair layout ("VNNI": [k/2][N][2]); the layouts below are chosen so that the only
// per-tile-pair repacking is the row-pair interleave of the bf16 probabilities and score
// gradients (a register permute), the rest is packed once per task:
//
//   forward (task: b, h)         S  = Q Kc            O += P Vs
//   backward (task: b, kv head g, over its R query heads; no atomics)
//     S = Q Kc, dP = dO Vc       P = exp(S - lse), dS = P (dP - delta)
//     dV^T += dO^T P_il          dK^T += Q^T dS_il    dQ += dS Ks
//
// with Kc / Vc the key block's pairs along the head dimension ([K/2][64][2], a 32-bit
// transpose), Ks / Vs pairs along the tokens ([32][K][2]), Q^T / dO^T [K][T], and X_il the
// row-pair interleave of X. Five tile products per (query block, key block) instead of the
// float32 kernel's seven. Scratch is per thread, grown once, never freed (no page faults per
// call). Requires K a multiple of 32 (the Python side falls back to the float32 kernel).
//
// Measured with benchmarks/flash_attention.py (the bench step's attention: 16 x 256 tokens, 6
// heads of 64, causal; one layer; all variants interleaved in one process, best of 10, under the
// lock on the 2-core Xeon above, load average 1.60 -> 1.63), ms:
//
//   | one layer                        | forward | forward + backward |
//   |----------------------------------|--------:|-------------------:|
//   | this kernel (bf16, AMX)          |    4.05 |               9.65 |
//   | flash_attention.cc (float32)     |   12.26 |              34.81 |
//   | model.forward's XLA, bf16        |   34.72 |              78.97 |
//   | model.forward's XLA, float32     |   48.22 |              89.63 |
//
// 3.6x the float32 kernel forward + backward (backward ~5.6 against ~22.6 ms); the 6 layers'
// attention in the bench step 58 ms against 209. Where the time went, perf on the first version:
// the [K][T] transposes (scalar, with a power-of-two row stride that kept hitting one L1 set)
// were over half of the backward, and memcpy calls for 128-byte rows 10% of everything; the
// 16 x 16 register transposes and the padded stride (Dims::Ld) took fwd + bwd from 12.4-14.5 to
// 9.65 ms. The whole bench step (benchmarks/train_throughput.py --variants twofiles-bf16-flash
// --rounds 6, before = TWOFILES_CPU_ISA=avx512, then the float32 kernel; back-to-back runs
// under the lock, load 1.8-2.0): median 1225 -> 869 ms, min 1190 -> 850 (an earlier pair with
// the first version: 1059 -> 873).
//
// The vdpbf16ps engine on a 2-core AMD EPYC Zen 5 (family 26 model 2: AVX-512 with
// AVX512_BF16, no AMX), the same benchmark, best of 10 (load 0.59), ms:
//
//   | one layer                        | forward | forward + backward |
//   |----------------------------------|--------:|-------------------:|
//   | this kernel (bf16, vdpbf16ps)    |    3.37 |               8.23 |
//   | flash_attention.cc (float32)     |    8.56 |              17.33 |
//   | model.forward's XLA, bf16        |   30.12 |              65.95 |
//   | model.forward's XLA, float32     |   34.30 |              71.36 |
//
// 2.1x the float32 kernel forward + backward: the bench step's six layers 49 against 104 ms.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "amx.h"
#include "bf16_engine.h"
#include "avx512_math.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 64;  // query and key block, in tokens
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
using bf16 = uint16_t;

struct Dims {
  int64_t B, T, H, G, K;
  int64_t R() const { return H / G; }
  int64_t Blocks() const { return (T + kBlock - 1) / kBlock; }
  int64_t Tp() const { return Blocks() * kBlock; }  // T padded to whole blocks
  // Row length of the [K][T] transposed arrays: Tp plus a cache line and a half, so that
  // walking down a column does not hit one L1 set (a power-of-two stride did: the transposes
  // were 60% of the backward, perf).
  int64_t Ld() const { return Tp() + 32; }
};

struct ForwardJob {
  const bf16 *q, *k, *v;
  const int32_t* seg;
  float *out, *lse;
  Dims d;
  twofiles::Tasks tasks;  // B * H
};

struct BackwardJob {
  const bf16 *q, *k, *v, *dout;
  const float *lse, *delta;
  const int32_t* seg;
  float *dq, *dk, *dv;
  Dims d;
  twofiles::Tasks tasks;  // B * G
};

using twofiles::Bf16Engine;
using twofiles::Engine;

// ---- the AVX-512 code (AMX instructions only on the kAmx engine) ------------------------------

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16")

#define TF_INLINE inline __attribute__((always_inline))

// C[M][N] (+)= A[M][kc] B, A bf16 rows (lda elements apart), B in pair layout [kc/2][N][2]
// (ldb elements per pair row), C float (ldc floats apart); M, N and kc multiples of 32.
template <bool kAccumulate>
void TileProduct(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float* c, int64_t ldc,
             int64_t M, int64_t N, int64_t kc) {
  for (int64_t m0 = 0; m0 < M; m0 += 32) {
    for (int64_t n0 = 0; n0 < N; n0 += 32) {
      float* c0 = c + m0 * ldc + n0;
      float* c1 = c0 + 16 * ldc;
      if (kAccumulate) {
        _tile_loadd(0, c0, ldc * 4);
        _tile_loadd(1, c0 + 16, ldc * 4);
        _tile_loadd(2, c1, ldc * 4);
        _tile_loadd(3, c1 + 16, ldc * 4);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int64_t k0 = 0; k0 < kc; k0 += 32) {
        _tile_loadd(4, a + m0 * lda + k0, lda * 2);
        _tile_loadd(5, a + (m0 + 16) * lda + k0, lda * 2);
        _tile_loadd(6, b + (k0 / 2) * ldb + n0 * 2, ldb * 2);
        _tile_loadd(7, b + (k0 / 2) * ldb + (n0 + 16) * 2, ldb * 2);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c0, ldc * 4);
      _tile_stored(1, c0 + 16, ldc * 4);
      _tile_stored(2, c1, ldc * 4);
      _tile_stored(3, c1 + 16, ldc * 4);
    }
  }
}

// The same product on vdpbf16ps, in register blocks of R rows x C vectors of 16 columns (R x C
// float accumulators): each 32-bit pair of A broadcast once and multiplied into C vectors of
// B's pairs, each vector of B shared by the R rows.
template <int R, int C, bool kAccumulate>
void DotBlocks(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float* c, int64_t ldc,
               int64_t M, int64_t N, int64_t kc) {
  for (int64_t m0 = 0; m0 < M; m0 += R)
    for (int64_t n0 = 0; n0 < N; n0 += 16 * C) {
      __m512 acc[R][C];
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < C; ++v)
          acc[r][v] = kAccumulate ? _mm512_loadu_ps(c + (m0 + r) * ldc + n0 + 16 * v)
                                  : _mm512_setzero_ps();
      const bf16* ap = a + m0 * lda;
      for (int64_t p = 0; p < kc / 2; ++p) {
        const bf16* bp = b + p * ldb + 2 * n0;
        __m512bh bv[C];
        for (int v = 0; v < C; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(bp + 32 * v);
        for (int r = 0; r < R; ++r) {
          int32_t pair;
          std::memcpy(&pair, ap + r * lda + 2 * p, sizeof pair);
          const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
          for (int v = 0; v < C; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, bv[v]);
        }
      }
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < C; ++v)
          _mm512_storeu_ps(c + (m0 + r) * ldc + n0 + 16 * v, acc[r][v]);
    }
}

// 4 x 64 where N allows (16 accumulators cover the instruction's latency at two issues a
// cycle; 4 broadcasts and 4 loads feed 16 products), 8 x 32 otherwise (K = 32). M is a
// multiple of 32. On the Zen 5 above, one layer's forward + backward at the bench shape took
// 7.8 ms in 4 x 64 blocks, 9.9 in 8 x 32 and 8.8 in 6 x 64 (best of 10, one run each).
template <bool kAccumulate>
void DotProduct(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float* c, int64_t ldc,
                int64_t M, int64_t N, int64_t kc) {
  if (N % 64 == 0)
    DotBlocks<4, 4, kAccumulate>(a, lda, b, ldb, c, ldc, M, N, kc);
  else
    DotBlocks<8, 2, kAccumulate>(a, lda, b, ldb, c, ldc, M, N, kc);
}

// The engine's product, fixed per task function (kAmx a template parameter: no dispatch in
// the tile loops).
template <bool kAmx, bool kAccumulate>
TF_INLINE void Product(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t M, int64_t N, int64_t kc) {
  if (kAmx)
    TileProduct<kAccumulate>(a, lda, b, ldb, c, ldc, M, N, kc);
  else
    DotProduct<kAccumulate>(a, lda, b, ldb, c, ldc, M, N, kc);
}

// 64 floats (4 vectors) to 64 bf16 (2 vectors), round to nearest even.
TF_INLINE void ToBf16(const __m512 x[4], __m512i out[2]) {
  out[0] = (__m512i)_mm512_cvtne2ps_pbh(x[1], x[0]);
  out[1] = (__m512i)_mm512_cvtne2ps_pbh(x[3], x[2]);
}

// Rows a and b (64 bf16 each) into pair layout: out[2s] = a[s], out[2s + 1] = b[s].
TF_INLINE void Interleave(const __m512i a[2], const __m512i b[2], bf16* out) {
  alignas(64) static const uint16_t lo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                              37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                              11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i ilo = _mm512_load_si512(lo), ihi = _mm512_add_epi16(ilo, _mm512_set1_epi16(16));
  for (int h = 0; h < 2; ++h) {
    _mm512_storeu_si512(out + 64 * h, _mm512_permutex2var_epi16(a[h], ilo, b[h]));
    _mm512_storeu_si512(out + 64 * h + 32, _mm512_permutex2var_epi16(a[h], ihi, b[h]));
  }
}

// Which of a query row's 64 scores (4 masks of 16) it may see: keys s <= t in its segment, and
// only the T real keys (padded segment ids never match: see PackSegments).
struct RowMasks {
  __mmask16 m[4];
};

TF_INLINE RowMasks Visible(const int32_t* seg_p, int64_t s0, int64_t t, bool all) {
  RowMasks r;
  if (all) {
    for (int v = 0; v < 4; ++v) r.m[v] = 0xFFFF;
    return r;
  }
  const __m512i own = _mm512_set1_epi32(seg_p[t]);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int v = 0; v < 4; ++v) {
    const __m512i key = _mm512_add_epi32(lanes, _mm512_set1_epi32(s0 + 16 * v));
    const __mmask16 causal = _mm512_cmple_epi32_mask(key, _mm512_set1_epi32(t));
    r.m[v] = _mm512_mask_cmpeq_epi32_mask(causal, _mm512_loadu_si512(seg_p + s0 + 16 * v), own);
  }
  return r;
}

// ---- packing (once per task) ----

// The sequence's segment ids padded to Tp with a value no real row has; and per block whether
// it lies in one segment (then a block pair before the diagonal needs no mask).
void PackSegments(const int32_t* seg, const Dims& d, int32_t* seg_p, uint8_t* uniform) {
  std::copy_n(seg, d.T, seg_p);
  int32_t lo = *std::min_element(seg, seg + d.T);
  std::fill(seg_p + d.T, seg_p + d.Tp(), lo == std::numeric_limits<int32_t>::min() ? 0 : lo - 1);
  for (int64_t j = 0; j < d.Blocks(); ++j) {
    const int32_t* s = seg_p + j * kBlock;
    uniform[j] = std::all_of(s, s + kBlock, [&](int32_t x) { return x == s[0]; });
  }
}

// Rows of one head ([T] rows `stride` apart, K wide) into [Tp][K], zero past T (inline
// vector copies: memcpy's calls for 128-byte rows were 10% of the time, perf).
void PackRows(const bf16* src, int64_t stride, const Dims& d, bf16* dst) {
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t c = 0; c < d.K; c += 32)
      _mm512_storeu_si512(dst + t * d.K + c, _mm512_loadu_si512(src + t * stride + c));
  std::fill(dst + d.T * d.K, dst + d.Tp() * d.K, 0);
}

// The same rows transposed to [K][Ld] (zero from T to Tp).
// 16 x 16 blocks, widened to 32 bits for Transpose16.
void PackTransposed(const bf16* src, int64_t stride, const Dims& d, bf16* dst) {
  const int64_t Ld = d.Ld();
  for (int64_t t0 = 0; t0 < d.Tp(); t0 += 16)
    for (int64_t c0 = 0; c0 < d.K; c0 += 16) {
      __m512 r[16], out[16];
      for (int i = 0; i < 16; ++i)
        r[i] = t0 + i < d.T ? _mm512_castsi512_ps(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                  reinterpret_cast<const __m256i*>(src + (t0 + i) * stride + c0))))
                            : _mm512_setzero_ps();
      twofiles::Transpose16(r, out);
      for (int i = 0; i < 16; ++i)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (c0 + i) * Ld + t0),
                            _mm512_cvtepi32_epi16(_mm512_castps_si512(out[i])));
    }
}

// Per key block, pairs along the head dimension: dst[j][p][s][e] = x[64 j + s][2 p + e]
// ([K/2][64][2] per block: B of Q K^T), zero past T.
void PackHeadPairs(const bf16* src, int64_t stride, const Dims& d, bf16* dst) {
  const int64_t P = d.K / 2;
  float* out = reinterpret_cast<float*>(dst);  // 32-bit pairs, moved as floats
  for (int64_t t0 = 0; t0 < d.Tp(); t0 += 16) {
    float* blk = out + (t0 / kBlock) * P * kBlock + t0 % kBlock;
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
      __m512 r[16], o[16];
      for (int i = 0; i < 16; ++i)
        r[i] = t0 + i < d.T ? _mm512_loadu_ps(src + (t0 + i) * stride + 2 * p0)
                            : _mm512_setzero_ps();
      twofiles::Transpose16(r, o);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(blk + (p0 + i) * kBlock, o[i]);
    }
  }
}

// Per key block, pairs along the tokens: dst[j][p][c][e] = x[64 j + 2 p + e][c] ([32][K][2]
// per block: B of P V and dS K), zero past T.
void PackTokenPairs(const bf16* src, int64_t stride, const Dims& d, bf16* dst) {
  alignas(64) static const uint16_t lo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                              37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                              11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i ilo = _mm512_load_si512(lo), ihi = _mm512_add_epi16(ilo, _mm512_set1_epi16(16));
  for (int64_t t = 0; t < d.Tp(); t += 2) {
    bf16* out = dst + t * d.K;  // pair row t / 2 of the whole sequence: [Tp/2][K][2]
    for (int64_t c = 0; c < d.K; c += 32) {
      const __m512i a = t < d.T ? _mm512_loadu_si512(src + t * stride + c) : _mm512_setzero_si512();
      const __m512i b =
          t + 1 < d.T ? _mm512_loadu_si512(src + (t + 1) * stride + c) : _mm512_setzero_si512();
      _mm512_storeu_si512(out + 2 * c, _mm512_permutex2var_epi16(a, ilo, b));
      _mm512_storeu_si512(out + 2 * c + 32, _mm512_permutex2var_epi16(a, ihi, b));
    }
  }
}


// Carves 64-byte-aligned arrays out of the scratch.
struct Carver {
  char* at;
  template <class X>
  X* take(int64_t n) {
    X* p = reinterpret_cast<X*>(at);
    at += (n * sizeof(X) + 63) / 64 * 64;
    return p;
  }
};

// ---- forward ----

template <bool kAmx>
void ForwardTask(const ForwardJob& j, int64_t task, char* scratch) {
  const Dims& d = j.d;
  const int64_t K = d.K, b = task / d.H, h = task % d.H, g = h / d.R(), Tp = d.Tp();
  Carver c{scratch};
  bf16 *q = c.take<bf16>(Tp * K), *kc = c.take<bf16>(Tp * K), *vs = c.take<bf16>(Tp * K);
  bf16* p_bf = c.take<bf16>(kBlock * kBlock);
  float *s = c.take<float>(kBlock * kBlock), *pv = c.take<float>(kBlock * K);
  float *o = c.take<float>(kBlock * K), *alpha = c.take<float>(kBlock);
  float *mx = c.take<float>(kBlock), *l = c.take<float>(kBlock);
  int32_t* seg = c.take<int32_t>(Tp);
  uint8_t* uniform = c.take<uint8_t>(d.Blocks());
  PackSegments(j.seg + b * d.T, d, seg, uniform);
  PackRows(j.q + (b * d.T * d.H + h) * K, d.H * K, d, q);
  PackHeadPairs(j.k + (b * d.T * d.G + g) * K, d.G * K, d, kc);
  PackTokenPairs(j.v + (b * d.T * d.G + g) * K, d.G * K, d, vs);
  for (int64_t qi = 0; qi < d.Blocks(); ++qi) {
    const int64_t t0 = qi * kBlock, n = std::min(kBlock, d.T - t0);
    std::fill(o, o + kBlock * K, 0.0f);
    std::fill(mx, mx + kBlock, kNegInf);
    std::fill(l, l + kBlock, 0.0f);
    for (int64_t kj = 0; kj <= qi; ++kj) {
      const int64_t s0 = kj * kBlock;
      Product<kAmx, false>(q + t0 * K, K, kc + s0 * K, 2 * kBlock, s, kBlock, kBlock, kBlock, K);
      const bool all = kj < qi && uniform[kj] && uniform[qi] && seg[s0] == seg[t0];
      for (int64_t i = 0; i < kBlock; ++i) {  // online softmax: raise the max, rescale the sums
        const RowMasks vis = Visible(seg, s0, t0 + i, all || i >= n);
        __m512 x[4], m4 = _mm512_set1_ps(kNegInf);
        for (int v = 0; v < 4; ++v) {
          x[v] = _mm512_loadu_ps(s + i * kBlock + 16 * v);
          m4 = _mm512_mask_max_ps(m4, vis.m[v], m4, x[v]);
        }
        const float m_new = std::max(mx[i], _mm512_reduce_max_ps(m4));
        __m512i pb[2];
        if (m_new == kNegInf) {  // nothing visible yet
          alpha[i] = 1.0f;
          pb[0] = pb[1] = _mm512_setzero_si512();
        } else {
          alpha[i] = mx[i] == kNegInf ? 0.0f : std::exp(mx[i] - m_new);
          const __m512 shift = _mm512_set1_ps(m_new);
          __m512 sum = _mm512_setzero_ps();
          for (int v = 0; v < 4; ++v) {
            x[v] = _mm512_maskz_mov_ps(vis.m[v], twofiles::Exp(_mm512_sub_ps(x[v], shift)));
            sum = _mm512_add_ps(sum, x[v]);
          }
          mx[i] = m_new;
          l[i] = l[i] * alpha[i] + _mm512_reduce_add_ps(sum);
          ToBf16(x, pb);
        }
        _mm512_storeu_si512(p_bf + i * kBlock, pb[0]);
        _mm512_storeu_si512(p_bf + i * kBlock + 32, pb[1]);
      }
      Product<kAmx, false>(p_bf, kBlock, vs + s0 * K, 2 * K, pv, K, kBlock, K, kBlock);
      for (int64_t i = 0; i < n; ++i) {
        const __m512 a = _mm512_set1_ps(alpha[i]);
        for (int64_t x = 0; x < K; x += 16)
          _mm512_storeu_ps(o + i * K + x, _mm512_fmadd_ps(_mm512_loadu_ps(o + i * K + x), a,
                                                          _mm512_loadu_ps(pv + i * K + x)));
      }
    }
    for (int64_t i = 0; i < n; ++i) {  // every row sees its own token: l > 0
      float* out = j.out + ((b * d.T + t0 + i) * d.H + h) * K;
      const __m512 inv = _mm512_set1_ps(1.0f / l[i]);
      for (int64_t x = 0; x < K; x += 16)
        _mm512_storeu_ps(out + x, _mm512_mul_ps(_mm512_loadu_ps(o + i * K + x), inv));
      j.lse[(b * d.H + h) * d.T + t0 + i] = mx[i] + std::log(l[i]);
    }
  }
}

size_t ForwardScratchFloats(const Dims& d) {
  return (3 * d.Tp() * d.K) / 2 + kBlock * kBlock / 2 + kBlock * kBlock + 2 * kBlock * d.K +
         3 * kBlock + d.Tp() + d.Blocks() + 16 * 64;
}

void ForwardWork(ForwardJob& j) {
  char* scratch =
      reinterpret_cast<char*>(twofiles::ThreadScratch<float>(ForwardScratchFloats(j.d)));
  if (Bf16Engine() == Engine::kAmx) {
    twofiles::LoadTileConfig();
    j.tasks.Run([&](int64_t t) { ForwardTask<true>(j, t, scratch); });
    _tile_release();
  } else {
    j.tasks.Run([&](int64_t t) { ForwardTask<false>(j, t, scratch); });
  }
}

// ---- backward ----

template <bool kAmx>
void BackwardTask(const BackwardJob& j, int64_t task, char* scratch) {
  const Dims& d = j.d;
  const int64_t K = d.K, b = task / d.G, g = task % d.G, Tp = d.Tp();
  Carver c{scratch};
  bf16 *q = c.take<bf16>(Tp * K), *dout = c.take<bf16>(Tp * K);
  const int64_t Ld = d.Ld();
  bf16 *qt = c.take<bf16>(Ld * K), *doutt = c.take<bf16>(Ld * K);
  bf16 *kc = c.take<bf16>(Tp * K), *vc = c.take<bf16>(Tp * K), *ks = c.take<bf16>(Tp * K);
  bf16 *p_il = c.take<bf16>(kBlock * kBlock), *ds_il = c.take<bf16>(kBlock * kBlock);
  bf16* ds_bf = c.take<bf16>(kBlock * kBlock);
  float *s = c.take<float>(kBlock * kBlock), *dp = c.take<float>(kBlock * kBlock);
  float *dq = c.take<float>(Tp * K), *dkt = c.take<float>(Ld * K), *dvt = c.take<float>(Ld * K);
  float *lse = c.take<float>(Tp), *delta = c.take<float>(Tp);
  int32_t* seg = c.take<int32_t>(Tp);
  uint8_t* uniform = c.take<uint8_t>(d.Blocks());
  PackSegments(j.seg + b * d.T, d, seg, uniform);
  const int64_t kv_at = (b * d.T * d.G + g) * K, kv_stride = d.G * K;
  PackHeadPairs(j.k + kv_at, kv_stride, d, kc);
  PackHeadPairs(j.v + kv_at, kv_stride, d, vc);
  PackTokenPairs(j.k + kv_at, kv_stride, d, ks);
  std::fill(dkt, dkt + Ld * K, 0.0f);
  std::fill(dvt, dvt + Ld * K, 0.0f);
  for (int64_t r = 0; r < d.R(); ++r) {
    const int64_t h = g * d.R() + r, q_at = (b * d.T * d.H + h) * K, q_stride = d.H * K;
    PackRows(j.q + q_at, q_stride, d, q);
    PackRows(j.dout + q_at, q_stride, d, dout);
    PackTransposed(j.q + q_at, q_stride, d, qt);
    PackTransposed(j.dout + q_at, q_stride, d, doutt);
    std::copy_n(j.lse + (b * d.H + h) * d.T, d.T, lse);
    std::copy_n(j.delta + (b * d.H + h) * d.T, d.T, delta);
    std::fill(lse + d.T, lse + Tp, 0.0f);
    std::fill(delta + d.T, delta + Tp, 0.0f);
    std::fill(dq, dq + Tp * K, 0.0f);
    for (int64_t kj = 0; kj < d.Blocks(); ++kj) {
      const int64_t s0 = kj * kBlock;
      for (int64_t qi = kj; qi < d.Blocks(); ++qi) {
        const int64_t t0 = qi * kBlock;
        Product<kAmx, false>(q + t0 * K, K, kc + s0 * K, 2 * kBlock, s, kBlock, kBlock, kBlock,
                             K);
        Product<kAmx, false>(dout + t0 * K, K, vc + s0 * K, 2 * kBlock, dp, kBlock, kBlock,
                             kBlock, K);
        const bool all = kj < qi && uniform[kj] && uniform[qi] && seg[s0] == seg[t0];
        __m512i pb[2][2], db[2][2];
        for (int64_t i = 0; i < kBlock; ++i) {  // P = exp(S - lse), dS = P (dP - delta)
          const bool pad = t0 + i >= d.T;
          const RowMasks vis = Visible(seg, s0, t0 + i, all);
          const __m512 shift = _mm512_set1_ps(lse[t0 + i]), dl = _mm512_set1_ps(delta[t0 + i]);
          __m512 p[4], ds[4];
          for (int v = 0; v < 4; ++v) {
            const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(s + i * kBlock + 16 * v), shift);
            p[v] = _mm512_maskz_mov_ps(pad ? 0 : vis.m[v], twofiles::Exp(x));
            const __m512 dpv = _mm512_loadu_ps(dp + i * kBlock + 16 * v);
            ds[v] = _mm512_mul_ps(p[v], _mm512_sub_ps(dpv, dl));
          }
          ToBf16(p, pb[i & 1]);
          ToBf16(ds, db[i & 1]);
          _mm512_storeu_si512(ds_bf + i * kBlock, db[i & 1][0]);
          _mm512_storeu_si512(ds_bf + i * kBlock + 32, db[i & 1][1]);
          if (i & 1) {
            Interleave(pb[0], pb[1], p_il + (i - 1) * kBlock);
            Interleave(db[0], db[1], ds_il + (i - 1) * kBlock);
          }
        }
        Product<kAmx, true>(doutt + t0, Ld, p_il, 2 * kBlock, dvt + s0, Ld, K, kBlock, kBlock);
        Product<kAmx, true>(qt + t0, Ld, ds_il, 2 * kBlock, dkt + s0, Ld, K, kBlock, kBlock);
        Product<kAmx, true>(ds_bf, kBlock, ks + s0 * K, 2 * K, dq + t0 * K, K, kBlock, K,
                            kBlock);
      }
    }
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t x = 0; x < K; x += 16)
        _mm512_storeu_ps(j.dq + q_at + t * q_stride + x, _mm512_loadu_ps(dq + t * K + x));
  }
  for (int64_t t0 = 0; t0 < d.T; t0 += 16)  // dK^T, dV^T [K][Ld] -> dk, dv [T][K]
    for (int64_t x0 = 0; x0 < K; x0 += 16)
      for (auto [from, to] : {std::pair{dkt, j.dk}, std::pair{dvt, j.dv}}) {
        __m512 r[16], o[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(from + (x0 + i) * Ld + t0);
        twofiles::Transpose16(r, o);
        for (int i = 0; i < 16 && t0 + i < d.T; ++i)
          _mm512_storeu_ps(to + kv_at + (t0 + i) * kv_stride + x0, o[i]);
      }
}

size_t BackwardScratchFloats(const Dims& d) {
  return (5 * d.Tp() * d.K + 2 * d.Ld() * d.K) / 2 + 3 * kBlock * kBlock / 2 +
         2 * kBlock * kBlock + d.Tp() * d.K + 2 * d.Ld() * d.K + 3 * d.Tp() + d.Blocks() + 20 * 64;
}

void BackwardWork(BackwardJob& j) {
  char* scratch =
      reinterpret_cast<char*>(twofiles::ThreadScratch<float>(BackwardScratchFloats(j.d)));
  if (Bf16Engine() == Engine::kAmx) {
    twofiles::LoadTileConfig();
    j.tasks.Run([&](int64_t t) { BackwardTask<true>(j, t, scratch); });
    _tile_release();
  } else {
    j.tasks.Run([&](int64_t t) { BackwardTask<false>(j, t, scratch); });
  }
}

#pragma GCC pop_options

// ---- XLA FFI handlers ------------------------------------------------------------------------

using Bf16x4 = ffi::Buffer<ffi::BF16, 4>;
using F32x4 = ffi::Buffer<ffi::F32, 4>;
using F32x3 = ffi::Buffer<ffi::F32, 3>;
using Segments = ffi::Buffer<ffi::S32, 2>;

ffi::Error CheckDims(const Bf16x4& q, const Bf16x4& k, const Bf16x4& v, const Segments& seg,
                     Dims& d) {
  if (Bf16Engine() == Engine::kNone)
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                      "flash_attention_bf16: this CPU has no AVX512_BF16 (or TWOFILES_CPU_ISA="
                      "avx2); call the float32 kernel (flash_attention.py picks it)");
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  d = Dims{qd[0], qd[1], qd[2], kd[2], qd[3]};
  const bool ok = kd[0] == d.B && kd[1] == d.T && kd[3] == d.K && d.G > 0 && d.H % d.G == 0 &&
                  vd[0] == d.B && vd[1] == d.T && vd[2] == d.G && vd[3] == d.K &&
                  seg.dimensions()[0] == d.B && seg.dimensions()[1] == d.T && d.K % 32 == 0 &&
                  d.K <= 256 && d.T > 0;
  if (!ok)
    return ffi::Error::InvalidArgument(
        "flash_attention_bf16: expected bf16 q [B,T,H,K], k and v [B,T,G,K] with H a multiple "
        "of G and K a multiple of 32 up to 256, and segment ids [B,T]");
  return ffi::Error::Success();
}

const bf16* Bf16Data(const Bf16x4& x) { return reinterpret_cast<const bf16*>(x.untyped_data()); }

ffi::Error ForwardImpl(ffi::ThreadPool pool, Bf16x4 q, Bf16x4 k, Bf16x4 v, Segments seg,
                       ffi::Result<F32x4> out, ffi::Result<F32x3> lse) {
  auto job = std::make_shared<ForwardJob>();
  if (auto err = CheckDims(q, k, v, seg, job->d); !err.success()) return err;
  job->q = Bf16Data(q);
  job->k = Bf16Data(k);
  job->v = Bf16Data(v);
  job->seg = seg.typed_data();
  job->out = out->typed_data();
  job->lse = lse->typed_data();
  job->tasks.n = job->d.B * job->d.H;
  twofiles::Spread(pool, job, job->tasks.n, ForwardWork);
  job->tasks.Wait();
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, Bf16x4 q, Bf16x4 k, Bf16x4 v, Segments seg,
                        F32x3 lse, Bf16x4 dout, F32x3 delta, ffi::Result<F32x4> dq,
                        ffi::Result<F32x4> dk, ffi::Result<F32x4> dv) {
  auto job = std::make_shared<BackwardJob>();
  if (auto err = CheckDims(q, k, v, seg, job->d); !err.success()) return err;
  job->q = Bf16Data(q);
  job->k = Bf16Data(k);
  job->v = Bf16Data(v);
  job->dout = Bf16Data(dout);
  job->seg = seg.typed_data();
  job->lse = lse.typed_data();
  job->delta = delta.typed_data();
  job->dq = dq->typed_data();
  job->dk = dk->typed_data();
  job->dv = dv->typed_data();
  job->tasks.n = job->d.B * job->d.G;
  twofiles::Spread(pool, job, job->tasks.n, BackwardWork);
  job->tasks.Wait();
  return ffi::Error::Success();
}

}  // namespace

// The engine this process runs the kernel on, for flash_attention.py (through ctypes): 0 none
// (call the float32 kernel), 1 vdpbf16ps, 2 AMX tiles.
extern "C" int TwofilesFlashBf16Engine() { return static_cast<int>(Bf16Engine()); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesFlashForwardBf16, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Bf16x4>()
                                  .Arg<Bf16x4>()
                                  .Arg<Bf16x4>()
                                  .Arg<Segments>()
                                  .Ret<F32x4>()
                                  .Ret<F32x3>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesFlashBackwardBf16, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Bf16x4>()
                                  .Arg<Bf16x4>()
                                  .Arg<Bf16x4>()
                                  .Arg<Segments>()
                                  .Arg<F32x3>()
                                  .Arg<Bf16x4>()
                                  .Arg<F32x3>()
                                  .Ret<F32x4>()
                                  .Ret<F32x4>()
                                  .Ret<F32x4>());
