// The softmax cross-entropy of a chunk of logits and its gradient in one pass over them, for the
// chunked loss (train/losses.py, through infer/kernels/xent.py):
//
//   nll[n] = logsumexp(logits[n]) - logits[n][target[n]]
//   g[n]   = weight[n] * (softmax(logits[n]) - onehot(target[n]))       (float32 or bf16)
//
// XLA ran this as four passes over the [chunk, V] float32 logits (a max, a sum of
// exponentials, the gradient, each reading 32 MB at the bench's 1024 x 8192, the gradient
// written as float32): ~48 ms of the bench step's ops on the 2-core Xeon, this kernel 9 ms.
// Here each row (32 KB at V = 8192) is read from memory once: its maximum, then e^(x - max)
// into a per-thread row buffer that stays in L1, then the scaled gradient written in the dtype
// the matmuls take it in (bf16 for the bf16 step: half the bytes). Rows are split over XLA's
// threads. AVX-512 with BF16 only; V a multiple of 32.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>

#include "xla/ffi/api/ffi.h"
#include "avx512_math.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

using bf16 = uint16_t;
constexpr int64_t kRowsPerTask = 16;

struct Job {
  const float *logits, *weights;
  const int32_t* targets;
  void* g;
  bool g_bf16;
  float* nll;
  int64_t N, V;
  twofiles::Tasks tasks;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")

void Row(const Job& j, int64_t n, float* e) {
  const float* x = j.logits + n * j.V;
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t v = 0; v < j.V; v += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(x + v));
  const float m = _mm512_reduce_max_ps(mx);
  const __m512 shift = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t v = 0; v < j.V; v += 16) {
    const __m512 ev = twofiles::Exp(_mm512_sub_ps(_mm512_loadu_ps(x + v), shift));
    _mm512_store_ps(e + v, ev);
    sum = _mm512_add_ps(sum, ev);
  }
  const float total = _mm512_reduce_add_ps(sum);
  const int32_t t = j.targets[n];
  const bool valid = t >= 0 && t < j.V;
  j.nll[n] = m + std::log(total) - (valid ? x[t] : 0.0f);
  const float w = j.weights[n];
  const __m512 scale = _mm512_set1_ps(w / total);
  if (valid) e[t] -= total;  // (e - total) w / total = w (p - 1) at the target
  if (j.g_bf16) {
    bf16* g = static_cast<bf16*>(j.g) + n * j.V;
    for (int64_t v = 0; v < j.V; v += 32) {
      const __m512 lo = _mm512_mul_ps(_mm512_load_ps(e + v), scale);
      const __m512 hi = _mm512_mul_ps(_mm512_load_ps(e + v + 16), scale);
      _mm512_storeu_si512(g + v, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  } else {
    float* g = static_cast<float*>(j.g) + n * j.V;
    for (int64_t v = 0; v < j.V; v += 16)
      _mm512_storeu_ps(g + v, _mm512_mul_ps(_mm512_load_ps(e + v), scale));
  }
}

void Work(Job& j) {
  float* e = twofiles::ThreadScratch<float>(j.V);
  j.tasks.Run([&](int64_t task) {
    const int64_t hi = std::min(j.N, (task + 1) * kRowsPerTask);
    for (int64_t n = task * kRowsPerTask; n < hi; ++n) Row(j, n, e);
  });
}

#pragma GCC pop_options

bool Supported() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                         && __builtin_cpu_supports("avx512bf16");
  return ok;
}

using F32x2 = ffi::Buffer<ffi::F32, 2>;
using F32x1 = ffi::Buffer<ffi::F32, 1>;
using S32x1 = ffi::Buffer<ffi::S32, 1>;

ffi::Error XentImpl(ffi::ThreadPool pool, F32x2 logits, S32x1 targets, F32x1 weights,
                    ffi::Result<ffi::AnyBuffer> g, ffi::Result<F32x1> nll) {
  if (!Supported()) return ffi::Error::InvalidArgument("xent: needs AVX-512 with BF16");
  auto job = std::make_shared<Job>();
  Job& j = *job;
  j.N = logits.dimensions()[0];
  j.V = logits.dimensions()[1];
  if (j.V % 32 || targets.dimensions()[0] != j.N || weights.dimensions()[0] != j.N)
    return ffi::Error::InvalidArgument("xent: V must be a multiple of 32, one target and one "
                                       "weight per row");
  if (g->element_type() != ffi::F32 && g->element_type() != ffi::BF16)
    return ffi::Error::InvalidArgument("xent: the gradient must be float32 or bf16");
  j.logits = logits.typed_data();
  j.targets = targets.typed_data();
  j.weights = weights.typed_data();
  j.g = g->untyped_data();
  j.g_bf16 = g->element_type() == ffi::BF16;
  j.nll = nll->typed_data();
  j.tasks.n = (j.N + kRowsPerTask - 1) / kRowsPerTask;
  twofiles::Spread(pool, job, j.tasks.n, Work);
  j.tasks.Wait();
  return ffi::Error::Success();
}

}  // namespace

// Whether this CPU can run the kernel, for xent.py.
extern "C" int TwofilesXentReady() { return Supported() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesXent, XentImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x2>()
                                  .Arg<S32x1>()
                                  .Arg<F32x1>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<F32x1>());
