// The backward of the MLP's gated activation, y = silu(gate) * up, in one pass over its input
// (model/activations.py has the expression; infer/kernels/swiglu.py calls this):
//
//   d_gate = g * up * s * (1 + gate - silu),  d_up = g * silu,  s = sigmoid(gate), silu = gate s
//
// gate_up [N][2F] (gate first, then up) and g [N][F] in, d_gate_up [N][2F] out, all float32
// or all bf16 (the bf16 step's: computed in float32, d_gate_up rounded to nearest even once).
// XLA ran it as three passes on the bench step (the sigmoid written out, d_gate, then d_up
// and the concatenation of both): ~5.5 ms a layer on the 2-core Zen 5 for 4096 x 1024 float32.
// This reads gate_up and g once and writes d_gate_up once: 2.2 ms a layer in float32, 1.1 in
// bf16 (the bench step's profile, benchmarks/train_step_profile.py). Rows are split over XLA's
// threads.
// AVX-512 with BF16 only; F a multiple of 16.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "xla/ffi/api/ffi.h"
#include "avx512_math.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kRowsPerTask = 32;

using bf16 = uint16_t;

struct Job {
  const void *gate_up, *g;
  void* d;
  int64_t N, F;
  twofiles::Tasks tasks;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16")

#define TF_INLINE inline __attribute__((always_inline))

TF_INLINE __m512 Load(const float* p) { return _mm512_loadu_ps(p); }
TF_INLINE __m512 Load(const bf16* p) {
  const __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
}
TF_INLINE void Store(float* p, __m512 x) { _mm512_storeu_ps(p, x); }
TF_INLINE void Store(bf16* p, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(x));
}

template <class T>
void Rows(const Job& j, int64_t task) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const int64_t n1 = std::min(j.N, (task + 1) * kRowsPerTask);
  for (int64_t n = task * kRowsPerTask; n < n1; ++n) {
    const T* gate = static_cast<const T*>(j.gate_up) + n * 2 * j.F;
    const T* up = gate + j.F;
    const T* g = static_cast<const T*>(j.g) + n * j.F;
    T* d_gate = static_cast<T*>(j.d) + n * 2 * j.F;
    T* d_up = d_gate + j.F;
    for (int64_t f = 0; f < j.F; f += 16) {
      const __m512 x = Load(gate + f), u = Load(up + f), gv = Load(g + f);
      const __m512 e = twofiles::Exp(_mm512_sub_ps(_mm512_setzero_ps(), x));  // e^-gate
      const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
      const __m512 silu = _mm512_mul_ps(x, s);
      const __m512 gs = _mm512_mul_ps(_mm512_mul_ps(gv, u), s);
      Store(d_gate + f, _mm512_mul_ps(gs, _mm512_sub_ps(_mm512_add_ps(one, x), silu)));
      Store(d_up + f, _mm512_mul_ps(gv, silu));
    }
  }
}

template <class T>
void Work(Job& j) { j.tasks.Run([&](int64_t t) { Rows<T>(j, t); }); }

#pragma GCC pop_options

bool Ready() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer gate_up, ffi::AnyBuffer g,
                        ffi::Result<ffi::AnyBuffer> d) {
  if (!Ready())
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                      "swiglu: this CPU has no AVX-512 with BF16; swiglu.py runs XLA's "
                      "expression there");
  const auto dgu = gate_up.dimensions(), dg = g.dimensions();
  const auto type = gate_up.element_type();
  if (dgu.size() != 2 || dg.size() != 2 || dgu[0] != dg[0] || dgu[1] != 2 * dg[1] ||
      dg[1] % 16 || (type != ffi::F32 && type != ffi::BF16) || g.element_type() != type ||
      d->element_type() != type)
    return ffi::Error::InvalidArgument("swiglu: expected gate_up [N, 2F], g [N, F] and the "
                                       "result, all float32 or all bf16, F a multiple of 16");
  auto job = std::make_shared<Job>();
  job->gate_up = gate_up.untyped_data();
  job->g = g.untyped_data();
  job->d = d->untyped_data();
  job->N = dg[0], job->F = dg[1];
  job->tasks.n = (job->N + kRowsPerTask - 1) / kRowsPerTask;
  twofiles::Spread(pool, job, job->tasks.n, type == ffi::BF16 ? Work<bf16> : Work<float>);
  job->tasks.Wait();
  return ffi::Error::Success();
}

}  // namespace

// Whether this CPU runs the kernel (AVX-512 F, DQ, BW and BF16), for swiglu.py.
extern "C" int TwofilesSwigluReady() { return Ready() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesSwigluBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
