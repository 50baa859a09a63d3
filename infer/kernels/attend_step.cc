// One decode step's attention for XLA on x86 CPUs with AVX2 and FMA (an XLA FFI custom call;
// built by infer/cpu_kernels.py, called by infer/attend_kernel.py).
//
//   out[b,g,r,:] = softmax_s(q[b,g,r,:] . k[b,g,:,s] for valid cache slots s < length,
//                            and q[b,g,r,:] . k_new[b,g,:]) applied to v[b,g,s,:] and v_new
//
// q is already scaled by 1/sqrt(K). The cache holds k as [B, G, K, S] and v as [B, G, S, K];
// `mask` [B, S] says which slots are valid, `length` how many slots were written (slots from
// there on are never read, so a step costs the tokens so far, not the preallocated cache).
//
// Why a kernel: XLA:CPU runs each of these small batched products as its own library call;
// measured on SmolLM2 (30 layers, 3 kv heads x 3 queries, 640 slots) they took 3.7 ms per
// decode step at batch 1 and 26 ms at batch 8, for ~15 MB of cache per step at batch 1.
//
// Work is one task per (b, g) pair, claimed from an atomic counter by the calling thread and
// XLA's intra-op threads (the pattern of int8_matmul.cc).

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

struct Shape {
  int64_t B, G, R, K, S;
};

// scores[r, s] = q[r, :] . k[:, s] over s < n (k is [K, S]), RB query rows at a time, 16 slots
// per pass so the 2*RB accumulators and two loads fit in the 16 registers.
template <int RB>
void Scores(const float* q, const float* k, const Shape& d, int64_t n, float* scores) {
  int64_t s = 0;
  for (; s + 16 <= n; s += 16) {
    __m256 acc[RB][2];
    for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t i = 0; i < d.K; ++i) {
      __m256 k0 = _mm256_loadu_ps(k + i * d.S + s), k1 = _mm256_loadu_ps(k + i * d.S + s + 8);
      for (int r = 0; r < RB; ++r) {
        __m256 qi = _mm256_broadcast_ss(q + r * d.K + i);
        acc[r][0] = _mm256_fmadd_ps(qi, k0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(qi, k1, acc[r][1]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      _mm256_storeu_ps(scores + r * d.S + s, acc[r][0]);
      _mm256_storeu_ps(scores + r * d.S + s + 8, acc[r][1]);
    }
  }
  for (; s < n; ++s)
    for (int r = 0; r < RB; ++r) {
      float sum = 0;
      for (int64_t i = 0; i < d.K; ++i) sum += q[r * d.K + i] * k[i * d.S + s];
      scores[r * d.S + s] = sum;
    }
}

void AllScores(const float* q, const float* k, const Shape& d, int64_t n, float* scores) {
  int64_t r = 0;
  for (; r + 4 <= d.R; r += 4) Scores<4>(q + r * d.K, k, d, n, scores + r * d.S);
  switch (d.R - r) {
    case 3: Scores<3>(q + r * d.K, k, d, n, scores + r * d.S); break;
    case 2: Scores<2>(q + r * d.K, k, d, n, scores + r * d.S); break;
    case 1: Scores<1>(q + r * d.K, k, d, n, scores + r * d.S); break;
    default: break;
  }
}

// Masks invalid slots, exponentiates in place relative to the row's maximum (the new token's
// score included) and returns the new token's weight; *total gets the row's sum of weights.
float Softmax(float* row, const bool* valid, int64_t n, float new_score, float* total) {
  float m = new_score;
  for (int64_t s = 0; s < n; ++s) {
    if (!valid[s]) row[s] = kMasked;
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
  const float w_new = std::exp(new_score - m);
  *total = sum + w_new;
  return w_new;
}

// out[:] = (sum_s p[s] v[s, :] + w_new v_new) / total for one query row (v is [S, K]).
void WeightedValues(const float* p, const float* v, const float* v_new, float w_new,
                    float total, const Shape& d, int64_t n, float* out) {
  const float inv = 1.0f / total;
  for (int64_t k0 = 0; k0 < d.K; k0 += 64) {  // 8 accumulators of 8 lanes per pass
    const int64_t width = std::min<int64_t>(64, d.K - k0), full = width / 8;
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      const __m256 ps = _mm256_set1_ps(p[s]);
      const float* vs = v + s * d.K + k0;
      for (int64_t j = 0; j < full; ++j)
        acc[j] = _mm256_fmadd_ps(ps, _mm256_loadu_ps(vs + 8 * j), acc[j]);
    }
    alignas(32) float lanes[8];
    for (int64_t j = 0; j < full; ++j) {
      _mm256_store_ps(lanes, acc[j]);
      for (int l = 0; l < 8; ++l) {
        const int64_t i = k0 + 8 * j + l;
        out[i] = (lanes[l] + w_new * v_new[i]) * inv;
      }
    }
    for (int64_t i = k0 + 8 * full; i < k0 + width; ++i) {  // K not a multiple of 8
      float sum = 0;
      for (int64_t s = 0; s < n; ++s) sum += p[s] * v[s * d.K + i];
      out[i] = (sum + w_new * v_new[i]) * inv;
    }
  }
}

struct Job {
  const float *q, *k, *v, *k_new, *v_new;
  const bool* mask;
  float* out;
  Shape d;
  int64_t n;  // slots to read
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

void Task(const Job& j, int64_t bg, std::vector<float>& scores) {
  const Shape& d = j.d;
  const int64_t b = bg / d.G;
  const float* q = j.q + bg * d.R * d.K;
  const float* k_new = j.k_new + bg * d.K;
  const float* v_new = j.v_new + bg * d.K;
  scores.resize(d.R * d.S);
  AllScores(q, j.k + bg * d.K * d.S, d, j.n, scores.data());
  for (int64_t r = 0; r < d.R; ++r) {
    float new_score = 0;
    for (int64_t i = 0; i < d.K; ++i) new_score += q[r * d.K + i] * k_new[i];
    float total;
    float* row = scores.data() + r * d.S;
    const float w_new = Softmax(row, j.mask + b * d.S, j.n, new_score, &total);
    WeightedValues(row, j.v + bg * d.S * d.K, v_new, w_new, total, d, j.n,
                   j.out + (bg * d.R + r) * d.K);
  }
}

void Work(Job& j) {
  std::vector<float> scores;
  const int64_t tasks = j.d.B * j.d.G;
  for (int64_t t; (t = j.next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
    Task(j, t, scores);
    j.done.fetch_add(1, std::memory_order_release);
  }
}

// Aliases: a template's commas would split the handler macro's arguments.
using F32x4 = ffi::Buffer<ffi::F32, 4>;
using F32x3 = ffi::Buffer<ffi::F32, 3>;
using Mask = ffi::Buffer<ffi::PRED, 2>;
using Scalar = ffi::Buffer<ffi::S32, 0>;

ffi::Error AttendStepImpl(ffi::ThreadPool pool, F32x4 q, F32x4 k, F32x4 v, Mask mask,
                          Scalar length, F32x3 k_new, F32x3 v_new, ffi::Result<F32x4> out) {
  const auto qd = q.dimensions(), kd = k.dimensions();
  Shape d{qd[0], qd[1], qd[2], qd[3], kd[3]};
  const auto vd = v.dimensions(), md = mask.dimensions();
  if (kd[0] != d.B || kd[1] != d.G || kd[2] != d.K || vd[0] != d.B || vd[1] != d.G ||
      vd[2] != d.S || vd[3] != d.K || md[0] != d.B || md[1] != d.S ||
      k_new.dimensions()[2] != d.K || v_new.dimensions()[2] != d.K) {
    return ffi::Error::InvalidArgument(
        "attend_step: expected q [B,G,R,K], k [B,G,K,S], v [B,G,S,K], mask [B,S], "
        "k_new and v_new [B,G,K]");
  }
  auto job = std::make_shared<Job>();
  job->q = q.typed_data();
  job->k = k.typed_data();
  job->v = v.typed_data();
  job->k_new = k_new.typed_data();
  job->v_new = v_new.typed_data();
  job->mask = mask.typed_data();
  job->out = out->typed_data();
  job->d = d;
  job->n = std::clamp<int64_t>(*length.typed_data(), 0, d.S);
  const int64_t tasks = d.B * d.G;
  const int64_t helpers = std::min({pool.num_threads() - 1, tasks - 1, kMaxHelpers});
  // Each helper holds the job alive: it may start after the caller has finished every task.
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { Work(*job); });
  Work(*job);
  while (job->done.load(std::memory_order_acquire) < tasks) _mm_pause();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesAttendStep, AttendStepImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<Mask>()
                                  .Arg<Scalar>()
                                  .Arg<F32x3>()
                                  .Arg<F32x3>()
                                  .Ret<F32x4>());
