// Vector maths the project's AVX-512 kernels share (flash_attention_bf16.cc, xent.cc,
// swiglu.cc). Included by those kernels (infer/kernels/cpu_kernels.py hashes it with them).

#pragma once

#include <immintrin.h>

namespace twofiles {

#pragma GCC push_options
#pragma GCC target("avx512f")

// e^x for x >= -103 (below: ~0), 16 lanes: x = n ln2 + f, e^f by a degree-6 polynomial
// (relative error ~2e-7, as the float32 flash kernel's), 2^n by vscalefps.
inline __attribute__((always_inline)) __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), f);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

#pragma GCC pop_options

}  // namespace twofiles
