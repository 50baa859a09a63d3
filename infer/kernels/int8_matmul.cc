// y[m, o] = scale[o] * sum_i x[m, i] * w[o, i]: float32 activations times int8 weights, for
// XLA on x86 CPUs with AVX2 and FMA (an XLA FFI custom call; built by infer/int8_kernel.py).
//
// Why: decoding one token is a matrix-vector product per weight matrix, bound by memory
// bandwidth, so int8 weights (a quarter of float32's bytes) could be ~4x faster; but XLA:CPU
// converts an int8 operand to float32 in a separate pass before its dot, which is slower than
// reading float32. Here each weight is converted in registers right before its multiply-add.
//
// Work is split into blocks of output rows that the calling thread and XLA's intra-op threads
// claim (tasks.h).

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

#include "xla/ffi/api/ffi.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kRowsPerBlock = 64;

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight int8 weights as eight floats.
inline __m256 Load8(const int8_t* p) {
  __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}

// One weight row against MB activation rows; U independent accumulators per activation row
// (chunks of 8 weights) so the multiply-adds do not wait on each other.
template <int MB, int U>
void RowTimesBatch(const float* x, int64_t I, const int8_t* w_row, float scale, float* y,
                   int64_t O) {
  __m256 acc[MB][U];
  for (int m = 0; m < MB; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 * U <= I; i += 8 * U) {
    for (int u = 0; u < U; ++u) {
      __m256 wf = Load8(w_row + i + 8 * u);
      for (int m = 0; m < MB; ++m)
        acc[m][u] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + m * I + i + 8 * u), acc[m][u]);
    }
  }
  for (; i + 8 <= I; i += 8) {
    __m256 wf = Load8(w_row + i);
    for (int m = 0; m < MB; ++m)
      acc[m][0] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + m * I + i), acc[m][0]);
  }
  for (int m = 0; m < MB; ++m) {
    for (int u = 1; u < U; ++u) acc[m][0] = _mm256_add_ps(acc[m][0], acc[m][u]);
    float sum = HorizontalSum(acc[m][0]);
    for (int64_t j = i; j < I; ++j) sum += x[m * I + j] * static_cast<float>(w_row[j]);
    y[m * O] = sum * scale;
  }
}

struct Job {
  const float* x;
  const int8_t* w;
  const float* scale;
  float* y;
  int64_t M, I, O;
  twofiles::Tasks blocks;  // of kRowsPerBlock output rows
};

void ComputeRows(const Job& j, int64_t o_begin, int64_t o_end) {
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int8_t* w_row = j.w + o * j.I;
    // Every row gets the same U (accumulators per row), so its sum is rounded the same way
    // whatever the batch and wherever the row sits in it: a request's greedy reply must not
    // depend on the rows beside it (with <4, 2> groups and a <1, 4> tail it did). 3 rows x 4
    // accumulators + the weights fill 13 of the 16 ymm registers.
    int64_t m = 0;
    for (; m + 3 <= j.M; m += 3)
      RowTimesBatch<3, 4>(j.x + m * j.I, j.I, w_row, j.scale[o], j.y + m * j.O + o, j.O);
    const float* x = j.x + m * j.I;
    float* y = j.y + m * j.O + o;
    switch (j.M - m) {
      case 2: RowTimesBatch<2, 4>(x, j.I, w_row, j.scale[o], y, j.O); break;
      case 1: RowTimesBatch<1, 4>(x, j.I, w_row, j.scale[o], y, j.O); break;
      default: break;
    }
  }
}

void Work(Job& j) {
  j.blocks.Run([&](int64_t b) {
    ComputeRows(j, b * kRowsPerBlock, std::min(j.O, (b + 1) * kRowsPerBlock));
  });
}

using Matrix = ffi::Buffer<ffi::F32, 2>;
using Int8Matrix = ffi::Buffer<ffi::S8, 2>;
using Vector = ffi::Buffer<ffi::F32, 1>;

ffi::Error Int8MatmulImpl(ffi::ThreadPool pool, Matrix x, Int8Matrix w, Vector scale,
                          ffi::Result<Matrix> y) {
  const int64_t M = x.dimensions()[0], I = x.dimensions()[1], O = w.dimensions()[0];
  if (w.dimensions()[1] != I || scale.dimensions()[0] != O || y->dimensions()[0] != M ||
      y->dimensions()[1] != O) {
    return ffi::Error::InvalidArgument(
        "int8_matmul: expected x [M, I], w [O, I], scale [O] and y [M, O]");
  }
  auto job = std::make_shared<Job>();
  job->x = x.typed_data();
  job->w = w.typed_data();
  job->scale = scale.typed_data();
  job->y = y->typed_data();
  job->M = M;
  job->I = I;
  job->O = O;
  job->blocks.n = (O + kRowsPerBlock - 1) / kRowsPerBlock;
  twofiles::Spread(pool, job, job->blocks.n, Work);
  job->blocks.Wait();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesInt8Matmul, Int8MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Int8Matrix>()
                                  .Arg<Vector>()
                                  .Ret<Matrix>());
