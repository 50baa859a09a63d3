// Causal attention of T new tokens over a KV cache that already holds them, for XLA on x86
// CPUs with AVX2 and FMA (an XLA FFI custom call; built by infer/cpu_kernels.py, called by
// infer/attend_kernel.py). Serves prefill (T = the prompt) and decode steps (T = 1) alike:
//
//   out[b,t,g,r,:] = softmax_s(q[b,t,g,r,:] . k[b,g,:,s]) v[b,g,s,:]
//                    over the valid slots s <= start + t (token t sits in slot start + t)
//
// q is already scaled by 1/sqrt(K). The cache holds k as [B, G, K, S] and v as [B, G, S, K], in
// float32 or float16 (llama.cpp's default cache type: half the bytes a step reads); `valid`
// [B, S] marks written, non-padding slots. Slots after the last token are never read,
// so a step costs the tokens so far, not the preallocated cache.
//
// Why a kernel: XLA:CPU runs each small batched product of attention as its own library call;
// on SmolLM2 (30 layers, 3 kv heads x 3 queries) a decode step's attention took 3.7 ms at batch
// 1 and 26 ms at batch 8 for ~15 MB of cache, and a 512-token prefill's ~170 ms.
//
// Work is one task per (b, g, block of kQueryBlock tokens), claimed from an atomic counter by
// the calling thread and XLA's intra-op threads (the pattern of int8_matmul.cc).

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMaxHelpers = 15;
constexpr float kMasked = -1e30f;  // as the XLA reference: a finite "minus infinity"

// exp(x) for eight floats: x = n ln2 + f with |f| <= ln2/2, e^f by a degree-6 polynomial
// (relative error ~2e-7), 2^n through the exponent bits. Inputs below -87 give 0.
inline __m256 Exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 f = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  f = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), f);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                    _mm256_set1_epi32(127)), 23);
  __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  return _mm256_andnot_ps(underflow, e);
}

// The cache holds float32 or float16 (stored as its 16 bits; converted in registers by F16C).
inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 Load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float Load1(const float* p) { return *p; }
inline float Load1(const uint16_t* p) { return _cvtsh_ss(*p); }

struct Shape {
  int64_t B, T, G, R, K, S;
};

constexpr int64_t kQueryBlock = 8;  // tokens per task: their rows share each loaded k block

// scores[r, s..s+16) = q[r, :] . k[:, s..s+16) for RB query rows (k is [K, S]); 2*RB
// accumulators and two loads fit in the 16 registers.
template <int RB, typename C>
void ScoresBlock16(const float* q, const C* k, int64_t K, int64_t S, int64_t s, float* scores) {
  __m256 acc[RB][2];
  for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t i = 0; i < K; ++i) {
    __m256 k0 = Load8(k + i * S + s), k1 = Load8(k + i * S + s + 8);
    for (int r = 0; r < RB; ++r) {
      __m256 qi = _mm256_broadcast_ss(q + r * K + i);
      acc[r][0] = _mm256_fmadd_ps(qi, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qi, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    _mm256_storeu_ps(scores + r * S + s, acc[r][0]);
    _mm256_storeu_ps(scores + r * S + s + 8, acc[r][1]);
  }
}

// scores[r, s] = q[r, :] . k[:, s] for `rows` contiguous query rows over slots s < n. The slot
// loop is outside the row loop so each 16-slot block of k stays in L1 for all rows; rows go six
// at a time (12 accumulators, two loads and a broadcast: 15 of the 16 registers).
template <typename C>
void Scores(const float* q, int64_t rows, const C* k, int64_t K, int64_t S, int64_t n,
            float* scores) {
  int64_t s = 0;
  for (; s + 16 <= n; s += 16) {
    int64_t r = 0;
    for (; r + 6 <= rows; r += 6) ScoresBlock16<6, C>(q + r * K, k, K, S, s, scores + r * S);
    const float* qr = q + r * K;
    float* out = scores + r * S;
    switch (rows - r) {
      case 5: ScoresBlock16<5, C>(qr, k, K, S, s, out); break;
      case 4: ScoresBlock16<4, C>(qr, k, K, S, s, out); break;
      case 3: ScoresBlock16<3, C>(qr, k, K, S, s, out); break;
      case 2: ScoresBlock16<2, C>(qr, k, K, S, s, out); break;
      case 1: ScoresBlock16<1, C>(qr, k, K, S, s, out); break;
      default: break;
    }
  }
  for (; s < n; ++s)
    for (int64_t r = 0; r < rows; ++r) {
      float sum = 0;
      for (int64_t i = 0; i < K; ++i) sum += q[r * K + i] * Load1(k + i * S + s);
      scores[r * S + s] = sum;
    }
}

// Masks the slots a query may not see (invalid, or after its own slot `last`), exponentiates
// the row in place relative to its maximum and returns the sum of its weights.
float Softmax(float* row, const bool* valid, int64_t n, int64_t last) {
  float m = kMasked;
  for (int64_t s = 0; s < n; ++s) {
    if (!valid[s] || s > last) row[s] = kMasked;
    m = std::max(m, row[s]);
  }
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum8 = _mm256_setzero_ps();
  int64_t s = 0;
  for (; s + 8 <= n; s += 8) {
    __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(row + s), mv));
    _mm256_storeu_ps(row + s, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum8);
  float sum = 0;
  for (float x : lanes) sum += x;
  for (; s < n; ++s) sum += (row[s] = std::exp(row[s] - m));
  return sum;
}

// out[r, :] = sum_s p[r, s] v[s, :] / total[r] for RB rows of weights (stride S; v is [S, K]),
// 32 outputs per pass: each loaded block of v feeds RB rows (4*RB accumulators).
template <int RB, typename C>
void WeightedValuesRows(const float* p, int64_t S, const C* v, int64_t K, int64_t n,
                        const float* total, float* const* out) {
  for (int64_t k0 = 0; k0 + 32 <= K; k0 += 32) {
    __m256 acc[RB][4];
    for (int r = 0; r < RB; ++r)
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      const C* vs = v + s * K + k0;
      __m256 v0 = Load8(vs), v1 = Load8(vs + 8), v2 = Load8(vs + 16), v3 = Load8(vs + 24);
      for (int r = 0; r < RB; ++r) {
        const __m256 ps = _mm256_broadcast_ss(p + r * S + s);
        acc[r][0] = _mm256_fmadd_ps(ps, v0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(ps, v1, acc[r][1]);
        acc[r][2] = _mm256_fmadd_ps(ps, v2, acc[r][2]);
        acc[r][3] = _mm256_fmadd_ps(ps, v3, acc[r][3]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      const __m256 inv = _mm256_set1_ps(total[r] > 0 ? 1.0f / total[r] : 0.0f);
      for (int j = 0; j < 4; ++j)
        _mm256_storeu_ps(out[r] + k0 + 8 * j, _mm256_mul_ps(acc[r][j], inv));
    }
  }
  for (int64_t i = K - K % 32; i < K; ++i)  // K not a multiple of 32
    for (int r = 0; r < RB; ++r) {
      float sum = 0;
      for (int64_t s = 0; s < n; ++s) sum += p[r * S + s] * Load1(v + s * K + i);
      out[r][i] = total[r] > 0 ? sum / total[r] : 0.0f;
    }
}

template <typename C>
void WeightedValues(const float* p, int64_t rows, int64_t S, const C* v, int64_t K,
                    int64_t n, const float* total, float* const* out) {
  int64_t r = 0;
  for (; r + 3 <= rows; r += 3)
    WeightedValuesRows<3, C>(p + r * S, S, v, K, n, total + r, out + r);
  if (rows - r == 2) WeightedValuesRows<2, C>(p + r * S, S, v, K, n, total + r, out + r);
  if (rows - r == 1) WeightedValuesRows<1, C>(p + r * S, S, v, K, n, total + r, out + r);
}

template <typename C>
struct Job {
  const float* q;
  const C *k, *v;
  const bool* valid;
  float* out;
  Shape d;
  int64_t start, blocks;  // blocks of kQueryBlock tokens per (b, g)
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

struct Scratch {
  std::vector<float> q, scores, total;
  std::vector<float*> out;
};

// One (b, g, token block): its R query heads per token against the slots up to its last token.
template <typename C>
void Task(const Job<C>& j, int64_t task, Scratch& scratch) {
  const Shape& d = j.d;
  const int64_t bg = task / j.blocks, b = bg / d.G, g = bg % d.G;
  const int64_t t0 = (task % j.blocks) * kQueryBlock, t1 = std::min(d.T, t0 + kQueryBlock);
  const int64_t rows = (t1 - t0) * d.R;
  const int64_t n = std::clamp<int64_t>(j.start + t1, 0, d.S);
  scratch.q.resize(rows * d.K);
  scratch.scores.resize(rows * d.S);
  scratch.total.resize(rows);
  scratch.out.resize(rows);
  for (int64_t t = t0; t < t1; ++t) {  // q rows of one kv head are strided by token: gather
    const int64_t at = (((b * d.T + t) * d.G + g) * d.R) * d.K;
    std::copy_n(j.q + at, d.R * d.K, scratch.q.data() + (t - t0) * d.R * d.K);
    for (int64_t r = 0; r < d.R; ++r) scratch.out[(t - t0) * d.R + r] = j.out + at + r * d.K;
  }
  float* scores = scratch.scores.data();
  Scores(scratch.q.data(), rows, j.k + bg * d.K * d.S, d.K, d.S, n, scores);
  for (int64_t row = 0; row < rows; ++row)
    scratch.total[row] = Softmax(scores + row * d.S, j.valid + b * d.S, n,
                                 j.start + t0 + row / d.R);
  WeightedValues(scores, rows, d.S, j.v + bg * d.S * d.K, d.K, n, scratch.total.data(),
                 scratch.out.data());
}

template <typename C>
void Work(Job<C>& j) {
  Scratch scratch;
  const int64_t tasks = j.d.B * j.d.G * j.blocks;
  for (int64_t t; (t = j.next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
    Task(j, t, scratch);
    j.done.fetch_add(1, std::memory_order_release);
  }
}

// Aliases: a template's commas would split the handler macro's arguments.
using F32x5 = ffi::Buffer<ffi::F32, 5>;
using Mask = ffi::Buffer<ffi::PRED, 2>;
using Scalar = ffi::Buffer<ffi::S32, 0>;
template <ffi::DataType DT>
using Cache = ffi::Buffer<DT, 4>;

template <ffi::DataType DT>
ffi::Error AttendCacheImpl(ffi::ThreadPool pool, F32x5 q, Cache<DT> k, Cache<DT> v, Mask valid,
                           Scalar start, ffi::Result<F32x5> out) {
  using C = ffi::NativeType<DT>;
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const Shape d{qd[0], qd[1], qd[2], qd[3], qd[4], kd[3]};
  if (kd[0] != d.B || kd[1] != d.G || kd[2] != d.K || vd[0] != d.B || vd[1] != d.G ||
      vd[2] != d.S || vd[3] != d.K || valid.dimensions()[0] != d.B ||
      valid.dimensions()[1] != d.S) {
    return ffi::Error::InvalidArgument(
        "attend_cache: expected q [B,T,G,R,K], k [B,G,K,S], v [B,G,S,K] and valid [B,S]");
  }
  auto job = std::make_shared<Job<C>>();
  job->q = q.typed_data();
  job->k = k.typed_data();
  job->v = v.typed_data();
  job->valid = valid.typed_data();
  job->out = out->typed_data();
  job->d = d;
  job->start = *start.typed_data();
  job->blocks = (d.T + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = d.B * d.G * job->blocks;
  const int64_t helpers = std::min({pool.num_threads() - 1, tasks - 1, kMaxHelpers});
  // Each helper holds the job alive: it may start after the caller has finished every task.
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { Work(*job); });
  Work(*job);
  while (job->done.load(std::memory_order_acquire) < tasks) _mm_pause();
  return ffi::Error::Success();
}

constexpr auto kF32 = ffi::DataType::F32;
constexpr auto kF16 = ffi::DataType::F16;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesAttendCache, AttendCacheImpl<kF32>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x5>()
                                  .Arg<Cache<kF32>>()
                                  .Arg<Cache<kF32>>()
                                  .Arg<Mask>()
                                  .Arg<Scalar>()
                                  .Ret<F32x5>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesAttendCacheF16, AttendCacheImpl<kF16>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x5>()
                                  .Arg<Cache<kF16>>()
                                  .Arg<Cache<kF16>>()
                                  .Arg<Mask>()
                                  .Arg<Scalar>()
                                  .Ret<F32x5>());
