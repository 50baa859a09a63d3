// Causal self-attention for training, forward and backward, in blocks with an online softmax
// (FlashAttention-2's schedule), for XLA on x86 CPUs (an XLA FFI custom call; built by
// infer/kernels/cpu_kernels.py, called by infer/kernels/flash_attention.py):
//
//   out[b,t,h,:] = softmax_s(q[b,t,h,:] . k[b,s,g,:]) v[b,s,g,:]   g = h / (H/G)
//                  over s <= t with seg[b,s] == seg[b,t] (packed documents)
//
// q is already scaled by 1/sqrt(K); all tensors are float32 in the model's [B, T, heads, K]
// layout, so no transposes are needed around the call. The forward also returns each row's
// log-sum-exp lse [B, H, T], which the backward uses to recompute the probabilities block by
// block: no [T, T] scores exist anywhere, only 64 x 64 tiles in each thread's L1/L2.
//
// Why a kernel: XLA:CPU runs attention's batched products as separate library calls, computes
// the masked upper half the causal mask throws away, and keeps the [B, H, T, T] probabilities
// for the backward pass (the bench step's attention einsums ran at ~37 GFLOP/s, profiled).
//
// Backward, without atomics and with FlashAttention-2's five tile products per tile pair: one
// task per (b, query head h) walks the key blocks and, for each, the query blocks at or after
// it, accumulating that key block's dk and dv in a tile and dq in the task's own rows of the
// whole sequence (T x K floats). With grouped heads (R > 1) the dk and dv shares go to [B, T,
// H, K] buffers that a second pass sums over each group's R heads. delta = rowsum(dout * out)
// comes precomputed. (An earlier version split the work by key block, then by query block,
// for more tasks, and recomputed the scores and dP for dq: 7 products.) B x H tasks keep 2
// cores busy at any training batch; a host with more cores than B x H would want the split.
//
// Run-time CPU dispatch: the task functions are compiled twice, for AVX-512 and for the AVX2 +
// FMA baseline the kernels require, and picked per CPU when a job starts. Both run the tiles
// in register blocks (ProductBlock, WeightedBlockV): R rows x C vectors of accumulators that
// stay in registers over the whole contraction, each loaded vector shared by the R rows. On
// AVX2 (16 ymm registers) 6 x 16 for products and 4 x 16 for weighted sums; on AVX-512 (32 zmm)
// 6 x 64 and 12 x 32. Plain loops over 64-float rows, vectorized by the compiler, spilled on
// AVX2 and ran at ~100 GFLOP/s on AVX-512 (Zen 5, a quarter of its float32 GEMM rate).
//
// Queries, dout, keys and values are read in place where a product wants their rows, and keys
// and values from a transposed copy made once per call where it wants their columns
// (Transposed). On a 2-core AMD EPYC Zen 3 (AVX2), the blocks and the transposed copy took the
// bench step's six layers of this kernel from 137 to 106-110 ms forward and from 466 to
// 314-329 ms backward (benchmarks/train_step_profile.py, one step each, load ~1.5). On a Zen 5
// (AVX-512), the blocks took one layer at the bench shape from 10.4 to 8.2 ms forward and from
// 29.9 to 21.9 ms forward + backward (best of 20, benchmarks/flash_attention.py); reading q and
// dout in place then took the medians of 3 alternating processes each from 8.2-9.2 to 6.4-7.2
// ms and from 25.5-28.7 to 23.1-25.9 ms, and the backward's five products instead of seven
// the forward + backward medians of 4 such processes from 22.3-27.8 to 17.2-22.5 ms (best of
// 20: 17.4 ms, against XLA's float32 einsums' 72.8).
//
// With bf16 compute on a CPU with AVX512_BF16, flash_attention_bf16.cc runs instead (forward +
// backward at the bench shape 3.6x this kernel's on AMX tiles, 2.1x with vdpbf16ps on Zen 5);
// this one stays the exact float32 path.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 64;  // query and key block, in tokens (one tile: 64 x 64 floats)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#define TF_INLINE inline __attribute__((always_inline))
#define TF_AVX512 __attribute__((target("avx512f")))

struct Dims {
  int64_t B, T, H, G, K;
  int64_t R() const { return H / G; }
  int64_t Blocks() const { return (T + kBlock - 1) / kBlock; }
  int64_t Padded() const { return Blocks() * kBlock; }  // a Transposed array's row, in floats
};

// Eight or sixteen floats in GCC's vector extension: one AVX2 or AVX-512 register. Written
// with it rather than as loops, since GCC does not vectorize a loop whose float compares might
// trap (the project builds without -ffast-math).
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef float F16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));

// Per instruction set: the float vector (with its int32 twin) of every loop, and the register
// blocks of the tile products and the weighted sums: rows x vectors of columns, that many
// accumulators of the 16 ymm or 32 zmm registers, with room for the loaded vectors and a
// broadcast (see the top).
struct Avx512 {
  using F = F16;
  using I = I16;
  static constexpr int kProductRows = 6, kProductVectors = 4;  // 6 x 64: 24 accumulators
  static constexpr int kWeightRows = 12, kWeightVectors = 2;   // 12 x 32: 24
};
struct Avx2 {
  using F = F8;
  using I = I8;
  static constexpr int kProductRows = 6, kProductVectors = 2;  // 6 x 16: 12 of 16 registers
  static constexpr int kWeightRows = 4, kWeightVectors = 2;    // 4 x 16: 8
};

template <class F>
TF_INLINE F LoadV(const float* p) {
  F x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

template <class F>
TF_INLINE void StoreV(float* p, F x) { std::memcpy(p, &x, sizeof x); }

template <class F>
constexpr int kLanes = sizeof(F) / sizeof(float);

// x in every lane, as one broadcast of its bits (F{} + x compiled to an add and a broadcast:
// without -ffast-math the compiler must keep 0 + x, for x = -0).
template <class F>
TF_INLINE F Splat(float x) {
  typedef int32_t I __attribute__((vector_size(sizeof(F))));
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const I v = I{} + bits;
  F f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}

// e^x: x = n ln2 + f with |f| <= ln2/2, e^f by a degree-6 polynomial (relative error ~2e-7),
// 2^n through the exponent bits. Inputs below -87 give e^-87 (callers zero masked lanes).
template <class F, class I>
TF_INLINE F ExpV(F x) {
  const F zero = {};
  x = x < zero - 87.0f ? zero - 87.0f : x;
  x = x > zero + 88.0f ? zero + 88.0f : x;
  const F t = x * 1.44269504f + 0.5f;
  I ni = __builtin_convertvector(t, I);                    // truncates towards zero:
  ni += __builtin_convertvector(ni, F) > t;                // floor (a true compare is -1)
  const F n = __builtin_convertvector(ni, F);
  F f = x - n * 0.693145752f;
  f = f - n * 1.42860677e-6f;
  F p = f * (1.0f / 720) + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const I bits = (ni + 127) << 23;
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// exp(s - shift) for visible scores, 0 for masked ones (-inf), over a tile row; returns the
// row's sum.
template <class Isa>
TF_INLINE float ExpRow(float* row, float shift) {
  using F = typename Isa::F;
  F sum = {};
  for (int64_t s = 0; s < kBlock; s += kLanes<F>) {
    const F x = LoadV<F>(row + s);
    const F e = x != kNegInf ? ExpV<F, typename Isa::I>(x - shift) : F{};  // (-inf - -inf: NaN)
    StoreV(row + s, e);
    sum += e;
  }
  float total = 0.0f;
  for (int i = 0; i < kLanes<F>; ++i) total += sum[i];
  return total;
}

// The row's largest score (-inf if all are masked).
template <class Isa>
TF_INLINE float RowMax(const float* row) {
  using F = typename Isa::F;
  F mx = LoadV<F>(row);
  for (int64_t s = kLanes<F>; s < kBlock; s += kLanes<F>) {
    const F x = LoadV<F>(row + s);
    mx = x > mx ? x : mx;
  }
  float m = mx[0];
  for (int i = 1; i < kLanes<F>; ++i) m = std::max(m, mx[i]);
  return m;
}

// k or v [B, T, G, K] as [B, G, K, Tp] (Tp = Dims::Padded(): T rounded up to kBlock, the tail
// zero), from which the tile products read their [K][kBlock] key tiles in place, Tp floats a
// row. Each block is transposed once per call, not once per tile pair (as a copy into scratch,
// that was a quarter of the AVX2 backward's time).
struct TransposeJob {
  const float* src;
  std::vector<float> dst;
  Dims d;
  twofiles::Tasks tasks;  // B * G * blocks
};

void TransposeWork(TransposeJob& j) {
  const Dims& d = j.d;
  j.tasks.Run([&](int64_t t) {
    const int64_t bg = t / d.Blocks(), b = bg / d.G, g = bg % d.G, s0 = t % d.Blocks() * kBlock;
    const int64_t m = std::min(kBlock, d.T - s0);
    const float* src = j.src + ((b * d.T + s0) * d.G + g) * d.K;
    float* dst = j.dst.data() + bg * d.K * d.Padded() + s0;
    for (int64_t i = 0; i < d.K; ++i, dst += d.Padded()) {
      for (int64_t r = 0; r < m; ++r) dst[r] = src[r * d.G * d.K + i];
      std::fill(dst + m, dst + kBlock, 0.0f);
    }
  });
}

std::vector<float> Transposed(ffi::ThreadPool& pool, const float* src, const Dims& d) {
  auto job = std::make_shared<TransposeJob>();
  job->src = src;
  job->d = d;
  job->dst.resize(d.B * d.G * d.K * d.Padded());
  job->tasks.n = d.B * d.G * d.Blocks();
  twofiles::Spread(pool, job, job->tasks.n, TransposeWork);
  job->tasks.Wait();  // a helper starting later finds no task and never touches dst
  return std::move(job->dst);
}

// The key tile of block s0 of (b, g) in a Transposed array.
TF_INLINE const float* KeyTile(const float* t, const Dims& d, int64_t b, int64_t g, int64_t s0) {
  return t + (b * d.G + g) * d.K * d.Padded() + s0;
}

// c[i][:] = a[i][:] . bt[:][...] for i < R: a [R][K] and bt [K][kBlock] with rows lda and ldb
// floats apart, c [R][kBlock]; in register blocks of R rows x C vectors of columns, each
// loaded vector of bt shared by the R rows, each element of a broadcast to the C vectors.
template <class F, int R, int C>
TF_INLINE void ProductBlock(const float* __restrict a, int64_t lda, int64_t K,
                            const float* __restrict bt, int64_t ldb, float* __restrict c) {
  constexpr int64_t kCols = C * kLanes<F>;
  static_assert(kBlock % kCols == 0);
  for (int64_t c0 = 0; c0 < kBlock; c0 += kCols) {
    F acc[R][C] = {};
    for (int64_t d = 0; d < K; ++d) {
      F b[C];
      for (int v = 0; v < C; ++v) b[v] = LoadV<F>(bt + d * ldb + c0 + v * kLanes<F>);
      for (int r = 0; r < R; ++r) {
        const F x = Splat<F>(a[r * lda + d]);
        for (int v = 0; v < C; ++v) acc[r][v] += x * b[v];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < C; ++v) StoreV(c + r * kBlock + c0 + v * kLanes<F>, acc[r][v]);
  }
}

// c = a . bt for the n rows of a (n <= kBlock), read in place (lda floats apart): the
// blocks, then the rows left in pairs and singly. Rows of c past n are left as they were.
template <class Isa>
TF_INLINE void TileProduct(const float* __restrict a, int64_t lda, int64_t n, int64_t K,
                           const float* __restrict bt, int64_t ldb, float* __restrict c) {
  using F = typename Isa::F;
  constexpr int R = Isa::kProductRows, C = Isa::kProductVectors;
  int64_t i = 0;
  for (; i + R <= n; i += R) ProductBlock<F, R, C>(a + i * lda, lda, K, bt, ldb, c + i * kBlock);
  for (; i + 2 <= n; i += 2) ProductBlock<F, 2, C>(a + i * lda, lda, K, bt, ldb, c + i * kBlock);
  for (; i < n; ++i) ProductBlock<F, 1, C>(a + i * lda, lda, K, bt, ldb, c + i * kBlock);
}

// acc[i][:] += sum_{s<m} w(i, s) x[s][:] for rows i0..i0+R, with w(i, s) = p[i * ps + s * ss]
// read as is (ps = kBlock, ss = 1) or transposed (ps = 1, ss = kBlock), x's rows ldx floats
// apart; in register blocks of R rows x C vectors of columns (as ProductBlock), for K a
// multiple of the block's columns. Zero weights are not skipped: testing them cost more than
// the masked triangle's products (AVX2, Zen 3).
template <class F, int R, int C>
TF_INLINE void WeightedBlockV(const float* __restrict p, int64_t ps, int64_t ss, int64_t i0,
                              int64_t m, int64_t K, const float* __restrict x, int64_t ldx,
                              float* __restrict acc) {
  constexpr int64_t kCols = C * kLanes<F>;
  for (int64_t k0 = 0; k0 < K; k0 += kCols) {
    F o[R][C];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < C; ++v) o[r][v] = LoadV<F>(acc + (i0 + r) * K + k0 + v * kLanes<F>);
    for (int64_t s = 0; s < m; ++s) {
      F xs[C];
      for (int v = 0; v < C; ++v) xs[v] = LoadV<F>(x + s * ldx + k0 + v * kLanes<F>);
      for (int r = 0; r < R; ++r) {
        const F w = Splat<F>(p[(i0 + r) * ps + s * ss]);
        for (int v = 0; v < C; ++v) o[r][v] += w * xs[v];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < C; ++v) StoreV(acc + (i0 + r) * K + k0 + v * kLanes<F>, o[r][v]);
  }
}

template <class Isa>
TF_INLINE void Weighted(const float* p, int64_t ps, int64_t ss, int64_t n, int64_t m, int64_t K,
                        const float* x, int64_t ldx, float* acc) {
  using F = typename Isa::F;
  constexpr int R = Isa::kWeightRows, C = Isa::kWeightVectors;
  int64_t i = 0;
  if (K % (C * kLanes<F>) == 0) {
    for (; i + R <= n; i += R) WeightedBlockV<F, R, C>(p, ps, ss, i, m, K, x, ldx, acc);
    for (; i + 2 <= n; i += 2) WeightedBlockV<F, 2, C>(p, ps, ss, i, m, K, x, ldx, acc);
    for (; i < n; ++i) WeightedBlockV<F, 1, C>(p, ps, ss, i, m, K, x, ldx, acc);
    return;
  }
  for (; i < n; ++i)  // other head sizes (tiny test models): row by row
    for (int64_t s = 0; s < m; ++s) {
      const float w = p[i * ps + s * ss];
      for (int64_t k = 0; k < K; ++k) acc[i * K + k] += w * x[s * ldx + k];
    }
}

// acc[i][:] += sum_s p[i][s] x[s][:] for i < n, s < m: p [n][kBlock], x [m][K] with rows ldx
// floats apart (read in place from the [B, T, G, K] input).
template <class Isa>
TF_INLINE void AccumulateRows(const float* p, int64_t n, int64_t m, int64_t K, const float* x,
                              int64_t ldx, float* acc) {
  Weighted<Isa>(p, kBlock, 1, n, m, K, x, ldx, acc);
}

// acc[s][:] += sum_i p[i][s] x[i][:] (the transposed product) for s < m: x [n][K].
template <class Isa>
TF_INLINE void AccumulateCols(const float* p, int64_t n, int64_t m, int64_t K, const float* x,
                              int64_t ldx, float* acc) {
  Weighted<Isa>(p, 1, kBlock, m, n, K, x, ldx, acc);
}

// Sets the scores a query row may not see to -inf: later tokens, other segments, and the slots
// past the last key (m keys in the block). t0 and s0 are the blocks' first tokens. A block
// wholly before the query block within one segment needs no mask (most blocks of a long row).
TF_INLINE void Mask(float* __restrict scores, int64_t n, int64_t m, int64_t t0, int64_t s0,
                    const int32_t* seg) {
  int32_t sk[kBlock];
  bool uniform = true;
  for (int64_t s = 0; s < kBlock; ++s) {
    sk[s] = seg[s0 + std::min(s, m - 1)];
    uniform &= sk[s] == seg[t0];
  }
  for (int64_t i = 0; i < n; ++i) uniform &= seg[t0 + i] == seg[t0];
  if (uniform && s0 + kBlock <= t0) return;
  for (int64_t i = 0; i < n; ++i) {
    float* row = scores + i * kBlock;
    const int64_t last = std::min(m - 1, t0 + i - s0);  // the last key the row may see
    const int32_t own = seg[t0 + i];
    for (int64_t s = 0; s < kBlock; ++s)
      row[s] = (s <= last) & (sk[s] == own) ? row[s] : kNegInf;
  }
}

struct Scratch {
  std::vector<float> s, dp, acc, dacc, dacc2, dq, m, l, alpha;
  explicit Scratch(const Dims& d)
      : s(kBlock * kBlock), dp(kBlock * kBlock), acc(kBlock * d.K), dacc(kBlock * d.K),
        dacc2(kBlock * d.K), m(kBlock), l(kBlock), alpha(kBlock) {}
};

// ---- forward -------------------------------------------------------------------------------

struct ForwardJob {
  const float *q, *v, *kt;  // kt: k Transposed
  const int32_t* seg;
  float *out, *lse;
  Dims d;
  twofiles::Tasks tasks;  // B * H * blocks, the last query blocks (the most work) first
};

template <class Isa>
TF_INLINE void ForwardTask(const ForwardJob& j, int64_t task, Scratch& sc) {
  const Dims& d = j.d;
  const int64_t K = d.K, bh = task % (d.B * d.H), b = bh / d.H, h = bh % d.H, g = h / d.R();
  const int64_t qi = d.Blocks() - 1 - task / (d.B * d.H);
  const int64_t t0 = qi * kBlock, n = std::min(kBlock, d.T - t0);
  const int32_t* seg = j.seg + b * d.T;
  const float* q = j.q + ((b * d.T + t0) * d.H + h) * K;  // n rows, H * K floats apart
  std::fill(sc.acc.begin(), sc.acc.end(), 0.0f);
  std::fill(sc.m.begin(), sc.m.end(), kNegInf);
  std::fill(sc.l.begin(), sc.l.end(), 0.0f);
  for (int64_t kj = 0; kj <= qi; ++kj) {
    const int64_t s0 = kj * kBlock, m = std::min(kBlock, d.T - s0);
    const float* v = j.v + ((b * d.T + s0) * d.G + g) * K;
    float* scores = sc.s.data();
    TileProduct<Isa>(q, d.H * K, n, K, KeyTile(j.kt, d, b, g, s0), d.Padded(), scores);
    Mask(scores, n, m, t0, s0, seg);
    for (int64_t i = 0; i < n; ++i) {  // online softmax: raise the max, rescale the sums
      float* row = scores + i * kBlock;
      const float m_new = std::max(sc.m[i], RowMax<Isa>(row));
      if (m_new == kNegInf) {  // nothing visible yet
        std::fill(row, row + kBlock, 0.0f);
        sc.alpha[i] = 1.0f;
        continue;
      }
      sc.alpha[i] = sc.m[i] == kNegInf ? 0.0f : std::exp(sc.m[i] - m_new);
      const float sum = ExpRow<Isa>(row, m_new);
      sc.m[i] = m_new;
      sc.l[i] = sc.l[i] * sc.alpha[i] + sum;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t x = 0; x < K; ++x) sc.acc[i * K + x] *= sc.alpha[i];
    AccumulateRows<Isa>(scores, n, m, K, v, d.G * K, sc.acc.data());
  }
  for (int64_t i = 0; i < n; ++i) {  // every row sees its own token: l > 0
    float* out = j.out + ((b * d.T + t0 + i) * d.H + h) * K;
    const float inv = 1.0f / sc.l[i];
    for (int64_t x = 0; x < K; ++x) out[x] = sc.acc[i * K + x] * inv;
    j.lse[(b * d.H + h) * d.T + t0 + i] = sc.m[i] + std::log(sc.l[i]);
  }
}

TF_AVX512 void ForwardTask512(const ForwardJob& j, int64_t t, Scratch& sc) {
  ForwardTask<Avx512>(j, t, sc);
}
void ForwardTask256(const ForwardJob& j, int64_t t, Scratch& sc) { ForwardTask<Avx2>(j, t, sc); }

// TWOFILES_CPU_ISA=avx2 takes the AVX2 path on an AVX-512 CPU too (so its test runs there).
bool HasAvx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") &&
                          std::string(std::getenv("TWOFILES_CPU_ISA") ?: "") != "avx2";
  return yes;
}

void ForwardWork(ForwardJob& j) {
  Scratch scratch(j.d);
  const auto task = HasAvx512() ? ForwardTask512 : ForwardTask256;
  j.tasks.Run([&](int64_t t) { task(j, t, scratch); });
}

// ---- backward ------------------------------------------------------------------------------

struct BackwardJob {
  const float *q, *k, *kt, *vt, *lse, *dout, *delta;  // kt, vt: k and v Transposed
  const int32_t* seg;
  float *dq, *dk, *dv;
  float *dk_heads, *dv_heads;  // [B, T, H, K]: each query head's share (= dk, dv when R = 1)
  Dims d;
  twofiles::Tasks head_tasks;   // pass 1: B * H, one per query head
  twofiles::Tasks group_tasks;  // pass 2 (R > 1 only): B * blocks, summing heads into groups
};

// Query block qi of head h: its n rows of q and dout, read in place (ld floats apart), and
// of lse and delta.
struct QueryBlock {
  const float *q, *dout, *lse, *delta;
  int64_t t0, n, ld;
};

TF_INLINE QueryBlock QueryBlockOf(const BackwardJob& j, int64_t b, int64_t h, int64_t qi) {
  const Dims& d = j.d;
  const int64_t t0 = qi * kBlock, at = ((b * d.T + t0) * d.H + h) * d.K, row = (b * d.H + h) * d.T;
  return {j.q + at, j.dout + at, j.lse + row + t0, j.delta + row + t0,
          t0, std::min(kBlock, d.T - t0), d.H * d.K};
}

// The probabilities P = exp(S - lse) of query block qb against the key block (s0, m keys of
// (b, g)), into sc.s; and dS = P (dP - delta) with dP = dout v^T, into sc.dp.
template <class Isa>
TF_INLINE void ProbsAndScoreGrads(const BackwardJob& j, const int32_t* seg, int64_t b, int64_t g,
                                  const QueryBlock& qb, int64_t s0, int64_t m, Scratch& sc) {
  const int64_t K = j.d.K, ld = j.d.Padded(), n = qb.n;
  float *p = sc.s.data(), *ds = sc.dp.data();
  TileProduct<Isa>(qb.q, qb.ld, n, K, KeyTile(j.kt, j.d, b, g, s0), ld, p);
  Mask(p, n, m, qb.t0, s0, seg);
  for (int64_t i = 0; i < n; ++i) ExpRow<Isa>(p + i * kBlock, qb.lse[i]);
  TileProduct<Isa>(qb.dout, qb.ld, n, K, KeyTile(j.vt, j.d, b, g, s0), ld, ds);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < kBlock; ++s)
      ds[i * kBlock + s] = p[i * kBlock + s] * (ds[i * kBlock + s] - qb.delta[i]);
}

// Query head h of batch row b, whole: for each key block, its dk and dv shares over the query
// blocks at or after it, and dq accumulated across key blocks in the task's own [T, K] rows.
// Every output row has exactly one writer, so no atomics; five tile products per tile pair.
template <class Isa>
TF_INLINE void HeadGradTask(const BackwardJob& j, int64_t task, Scratch& sc) {
  const Dims& d = j.d;
  const int64_t K = d.K, b = task / d.H, h = task % d.H, g = h / d.R(), ld = d.H * K;
  const int32_t* seg = j.seg + b * d.T;
  float *dk = sc.dacc.data(), *dv = sc.dacc2.data(), *dq = sc.dq.data();
  std::fill(sc.dq.begin(), sc.dq.end(), 0.0f);
  for (int64_t kj = 0; kj < d.Blocks(); ++kj) {
    const int64_t s0 = kj * kBlock, m = std::min(kBlock, d.T - s0);
    const float* k = j.k + ((b * d.T + s0) * d.G + g) * K;
    std::fill(sc.dacc.begin(), sc.dacc.end(), 0.0f);
    std::fill(sc.dacc2.begin(), sc.dacc2.end(), 0.0f);
    for (int64_t qi = kj; qi < d.Blocks(); ++qi) {
      const QueryBlock qb = QueryBlockOf(j, b, h, qi);
      ProbsAndScoreGrads<Isa>(j, seg, b, g, qb, s0, m, sc);
      AccumulateCols<Isa>(sc.s.data(), qb.n, m, K, qb.dout, qb.ld, dv);  // dv += P^T dout
      AccumulateCols<Isa>(sc.dp.data(), qb.n, m, K, qb.q, qb.ld, dk);    // dk += dS^T q
      AccumulateRows<Isa>(sc.dp.data(), qb.n, m, K, k, d.G * K, dq + qb.t0 * K);  // dq += dS k
    }
    const int64_t at = ((b * d.T + s0) * d.H + h) * K;
    for (int64_t s = 0; s < m; ++s) {
      std::memcpy(j.dk_heads + at + s * ld, dk + s * K, K * sizeof(float));
      std::memcpy(j.dv_heads + at + s * ld, dv + s * K, K * sizeof(float));
    }
  }
  for (int64_t t = 0; t < d.T; ++t)
    std::memcpy(j.dq + ((b * d.T + t) * d.H + h) * K, dq + t * K, K * sizeof(float));
}

TF_AVX512 void HeadGradTask512(const BackwardJob& j, int64_t t, Scratch& sc) {
  HeadGradTask<Avx512>(j, t, sc);
}
void HeadGradTask256(const BackwardJob& j, int64_t t, Scratch& sc) { HeadGradTask<Avx2>(j, t, sc); }

void HeadGradWork(BackwardJob& j) {
  Scratch scratch(j.d);
  scratch.dq.resize(j.d.Padded() * j.d.K);  // the task's dq rows, the whole sequence
  const auto task = HasAvx512() ? HeadGradTask512 : HeadGradTask256;
  j.head_tasks.Run([&](int64_t t) { task(j, t, scratch); });
}

// dk and dv of kv head g: the sums of its R query heads' shares, for one block of one row.
void GroupSumWork(BackwardJob& j) {
  const Dims& d = j.d;
  j.group_tasks.Run([&](int64_t task) {
    const int64_t b = task / d.Blocks(), t0 = task % d.Blocks() * kBlock;
    for (int64_t t = t0; t < std::min(t0 + kBlock, d.T); ++t)
      for (int64_t g = 0; g < d.G; ++g) {
        const int64_t out = ((b * d.T + t) * d.G + g) * d.K;
        const int64_t in = ((b * d.T + t) * d.H + g * d.R()) * d.K;
        for (int64_t x = 0; x < d.K; ++x) {
          float sk = 0.0f, sv = 0.0f;
          for (int64_t r = 0; r < d.R(); ++r) {
            sk += j.dk_heads[in + r * d.K + x];
            sv += j.dv_heads[in + r * d.K + x];
          }
          j.dk[out + x] = sk;
          j.dv[out + x] = sv;
        }
      }
  });
}

// ---- XLA FFI handlers ----------------------------------------------------------------------

using F32x4 = ffi::Buffer<ffi::F32, 4>;
using F32x3 = ffi::Buffer<ffi::F32, 3>;
using Segments = ffi::Buffer<ffi::S32, 2>;

// The dimensions of q [B,T,H,K], k and v [B,T,G,K] and segments [B,T], or an error naming
// what was expected.
ffi::Error CheckDims(const F32x4& q, const F32x4& k, const F32x4& v, const Segments& seg,
                     Dims& d) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  d = Dims{qd[0], qd[1], qd[2], kd[2], qd[3]};
  const bool ok = kd[0] == d.B && kd[1] == d.T && kd[3] == d.K && d.G > 0 && d.H % d.G == 0 &&
                  vd[0] == d.B && vd[1] == d.T && vd[2] == d.G && vd[3] == d.K &&
                  seg.dimensions()[0] == d.B && seg.dimensions()[1] == d.T;
  if (!ok)
    return ffi::Error::InvalidArgument(
        "flash_attention: expected q [B,T,H,K], k and v [B,T,G,K] with H a multiple of G, "
        "and segment ids [B,T]");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, F32x4 q, F32x4 k, F32x4 v, Segments seg,
                       ffi::Result<F32x4> out, ffi::Result<F32x3> lse) {
  auto job = std::make_shared<ForwardJob>();
  if (auto err = CheckDims(q, k, v, seg, job->d); !err.success()) return err;
  const std::vector<float> kt = Transposed(pool, k.typed_data(), job->d);
  job->q = q.typed_data();
  job->v = v.typed_data();
  job->kt = kt.data();
  job->seg = seg.typed_data();
  job->out = out->typed_data();
  job->lse = lse->typed_data();
  job->tasks.n = job->d.B * job->d.H * job->d.Blocks();
  twofiles::Spread(pool, job, job->tasks.n, ForwardWork);
  job->tasks.Wait();
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, F32x4 q, F32x4 k, F32x4 v, Segments seg,
                        F32x3 lse, F32x4 dout, F32x3 delta, ffi::Result<F32x4> dq,
                        ffi::Result<F32x4> dk, ffi::Result<F32x4> dv) {
  auto job = std::make_shared<BackwardJob>();
  if (auto err = CheckDims(q, k, v, seg, job->d); !err.success()) return err;
  const std::vector<float> kt = Transposed(pool, k.typed_data(), job->d);
  const std::vector<float> vt = Transposed(pool, v.typed_data(), job->d);
  job->q = q.typed_data();
  job->k = k.typed_data();
  job->kt = kt.data();
  job->vt = vt.data();
  job->seg = seg.typed_data();
  job->lse = lse.typed_data();
  job->dout = dout.typed_data();
  job->delta = delta.typed_data();
  job->dq = dq->typed_data();
  job->dk = dk->typed_data();
  job->dv = dv->typed_data();
  std::vector<float> dk_heads, dv_heads;  // with R = 1 the heads are the groups
  if (job->d.R() > 1) {
    dk_heads.resize(q.element_count());
    dv_heads.resize(q.element_count());
  }
  job->dk_heads = job->d.R() > 1 ? dk_heads.data() : job->dk;
  job->dv_heads = job->d.R() > 1 ? dv_heads.data() : job->dv;
  job->head_tasks.n = job->d.B * job->d.H;
  twofiles::Spread(pool, job, job->head_tasks.n, HeadGradWork);
  job->head_tasks.Wait();
  if (job->d.R() > 1) {
    job->group_tasks.n = job->d.B * job->d.Blocks();
    twofiles::Spread(pool, job, job->group_tasks.n, GroupSumWork);
    job->group_tasks.Wait();
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesFlashForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<Segments>()
                                  .Ret<F32x4>()
                                  .Ret<F32x3>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesFlashBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<Segments>()
                                  .Arg<F32x3>()
                                  .Arg<F32x4>()
                                  .Arg<F32x3>()
                                  .Ret<F32x4>()
                                  .Ret<F32x4>()
                                  .Ret<F32x4>());
