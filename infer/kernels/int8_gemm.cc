// y[m, o] = (float(acc[m, o]) * sx[m]) * sw[o], acc[m, o] = sum_i qx[m, i] * w[o, i] in int32:
// float32 activations quantised per row to int8 on the fly (sx[m] = max|x[m, :]| / 127,
// qx = round(x / sx)) times int8 weights with one scale per output row ("W8A8 dynamic"), for
// XLA on x86 CPUs with AVX2 (an XLA FFI custom call; built by infer/int8_kernel.py).
//
// Why: prefill is bound by arithmetic, and float32 FMAs give 16 multiply-adds per cycle per
// core. Without AVX-VNNI the fastest exact integer route is vpmaddwd (int16 x int16, adjacent
// pairs summed into int32): 16 multiply-adds per instruction, two per cycle, and exact because
// |127 * 127| * 2 fits easily. (vpmaddubsw takes 32 but saturates at 16 bits unless the
// activations drop to 7 bits; vpmaddwd keeps all 8 and is as fast per multiply unit.)
//
// Layout. Phase 1 converts both operands to int16 once per call: activation rows [M, Ip] (Ip =
// I rounded up to even, padded with 0) and weight panels of kNR = 16 output rows interleaved
// by k-pairs, [O/16][Ip/2][16][2], so one 32-byte load gives 8 outputs' pairs and one 32-bit
// broadcast gives a row's pair. Phase 2 computes tiles of kMR rows x 16 outputs with kMR * 2
// accumulator registers. A task is a block of kPanelsPerBlock panels times a chunk of rows:
// each row tile (a few KiB) stays in L1 across the block's panels, and the panels (<= 192 KiB
// for I = 1536) stay in L2 across the chunk's row tiles.
//
// Threads: as in int8_matmul.cc, the caller and XLA's intra-op pool claim work from atomic
// counters, phase 1 first; a thread that finishes phase 1 waits only for blocks that running
// threads have claimed, so nobody waits on a helper that never started.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMR = 6;                 // rows per tile: 12 accumulators fill the ymm registers
constexpr int kNR = 16;                // outputs per panel: two ymm of 8 int32
constexpr int64_t kPanelsPerBlock = 4;
constexpr int64_t kRowsPerTask = kMR * 20;
constexpr int64_t kQuantRowsPerBlock = 16;
constexpr int64_t kMaxHelpers = 15;

struct Job {
  const float* x;
  const int8_t* w;
  const float* sw;
  float* y;
  int64_t M, I, O, Ip, KP, n_panels;
  std::unique_ptr<int16_t[]> qx;      // [M, Ip]
  std::unique_ptr<float[]> sx;        // [M]
  std::unique_ptr<int16_t[]> panels;  // [n_panels, KP, kNR, 2]
  std::unique_ptr<float[]> sw_pad;    // [n_panels * kNR], zero past O
  int64_t n_prep, n_m_chunks, n_o_blocks, n_tasks;
  std::atomic<int64_t> next_prep{0}, prep_done{0}, next_task{0}, tasks_done{0};
};

inline float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One activation row to int16 with its scale. The same float operations as the XLA
// reference (multiply by 127 / absmax, round half to even), so both give identical integers.
void QuantizeRow(const float* x, int64_t I, int64_t Ip, int16_t* q, float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= I; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(abs_mask, _mm256_loadu_ps(x + i)));
  float amax = HorizontalMax(vmax);
  for (; i < I; ++i) amax = std::max(amax, std::fabs(x[i]));
  // An all-zero row gets scale 0 and zeros (127 / 0 would make 0 * inf = NaN).
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  *scale = amax / 127.0f;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  i = 0;
  for (; i + 16 <= I; i += 16) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv));
    a = _mm256_min_epi32(_mm256_max_epi32(a, lo), hi);
    b = _mm256_min_epi32(_mm256_max_epi32(b, lo), hi);
    // packs interleaves 128-bit lanes; the permute restores element order.
    __m256i ab = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), ab);
  }
  for (; i < I; ++i) {
    float r = std::nearbyint(x[i] * inv);  // the current rounding mode: half to even
    q[i] = static_cast<int16_t>(std::min(127.0f, std::max(-127.0f, r)));
  }
  for (; i < Ip; ++i) q[i] = 0;  // the pad of odd I (its weights are 0 too)
}

// 8 x 8 transpose of 32-bit elements.
inline void Transpose8x8(__m256i r[8]) {
  __m256i t[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  __m256i u[8];
  for (int k = 0; k < 2; ++k) {
    u[4 * k + 0] = _mm256_unpacklo_epi64(t[4 * k + 0], t[4 * k + 2]);
    u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k + 0], t[4 * k + 2]);
    u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
    r[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
  }
}

// Weight rows o0 .. o0+15 (rows past O are zero) to one int16 panel [KP][16][2]: each 32-bit
// unit is one row's k-pair, so the panel is a 32-bit transpose of the sign-extended rows.
void PackPanel(const Job& j, int64_t p) {
  const int64_t o0 = p * kNR;
  const int64_t rows = std::min<int64_t>(kNR, j.O - o0);
  int16_t* dst = j.panels.get() + p * j.KP * kNR * 2;
  int64_t kp = 0;
  if (rows == kNR) {
    for (; 2 * kp + 16 <= j.I; kp += 8) {  // 8 k-pairs of 16 rows per step
      for (int half = 0; half < 2; ++half) {
        __m256i r[8];
        for (int k = 0; k < 8; ++k) {
          const int8_t* src = j.w + (o0 + 8 * half + k) * j.I + 2 * kp;
          r[k] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
        }
        Transpose8x8(r);  // r[k] = k-pair kp + k of the 8 rows
        for (int k = 0; k < 8; ++k)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + ((kp + k) * kNR + 8 * half) * 2), r[k]);
      }
    }
  }
  for (; kp < j.KP; ++kp) {
    for (int64_t r = 0; r < kNR; ++r) {
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t i = 2 * kp + h;
        dst[(kp * kNR + r) * 2 + h] = (r < rows && i < j.I) ? j.w[(o0 + r) * j.I + i] : 0;
      }
    }
  }
}

// The products of MR rows x 16 outputs over all k-pairs, in int32: per k-pair two 32-byte
// weight loads, and per row one 32-bit broadcast of its pair and two multiply-adds.
template <int MR>
void Accumulate(const int32_t* x, int64_t stride, const int16_t* panel, int64_t KP,
                __m256i acc[][2]) {
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
  for (int64_t kp = 0; kp < KP; ++kp) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + kp * 32));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + kp * 32 + 16));
    for (int m = 0; m < MR; ++m) {
      const __m256i xb = _mm256_set1_epi32(x[m * stride + kp]);
      acc[m][0] = _mm256_add_epi32(acc[m][0], _mm256_madd_epi16(xb, w0));
      acc[m][1] = _mm256_add_epi32(acc[m][1], _mm256_madd_epi16(xb, w1));
    }
  }
}

// The same for 6 rows, in assembly: it needs all 16 ymm registers (12 accumulators, 2
// weights, a broadcast, a product), and GCC 12 compiles the intrinsics with a register copy
// per accumulator per step, which fills the dispatch slots (measured ~1.05x float32 then).
template <>
void Accumulate<6>(const int32_t* x, int64_t stride, const int16_t* panel, int64_t KP,
                   __m256i acc[][2]) {
  // Registers: ymm0-11 accumulators (row m in ymm{2m, 2m+1}), ymm12-13 weights, ymm14 the
  // broadcast pair, ymm15 a product.
  const int32_t* a0 = x;               // rows 0, 1, 2, 4 are a0 + {0, 1, 2, 4} * stride
  const int32_t* a3 = x + 3 * stride;  // rows 3, 5 are a3 + {0, 2} * stride
  const int64_t s = stride * 4;        // bytes
  int64_t n = KP;
#define TWOFILES_ROW(ADDR, C0, C1)       \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"   \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t" \
  "vpaddd %%ymm15, %%" C0 ", %%" C0 "\n\t" \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n\t" \
  "vpaddd %%ymm14, %%" C1 ", %%" C1 "\n\t"
  asm volatile(
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
      "vmovdqa %%ymm0, %%ymm1\n\t" "vmovdqa %%ymm0, %%ymm2\n\t" "vmovdqa %%ymm0, %%ymm3\n\t"
      "vmovdqa %%ymm0, %%ymm4\n\t" "vmovdqa %%ymm0, %%ymm5\n\t" "vmovdqa %%ymm0, %%ymm6\n\t"
      "vmovdqa %%ymm0, %%ymm7\n\t" "vmovdqa %%ymm0, %%ymm8\n\t" "vmovdqa %%ymm0, %%ymm9\n\t"
      "vmovdqa %%ymm0, %%ymm10\n\t" "vmovdqa %%ymm0, %%ymm11\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      "vmovdqu (%[w]), %%ymm12\n\t"
      "vmovdqu 32(%[w]), %%ymm13\n\t"
      TWOFILES_ROW("(%[a0])", "ymm0", "ymm1")
      TWOFILES_ROW("(%[a0],%[s],1)", "ymm2", "ymm3")
      TWOFILES_ROW("(%[a0],%[s],2)", "ymm4", "ymm5")
      TWOFILES_ROW("(%[a3])", "ymm6", "ymm7")
      TWOFILES_ROW("(%[a0],%[s],4)", "ymm8", "ymm9")
      TWOFILES_ROW("(%[a3],%[s],2)", "ymm10", "ymm11")
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "add $64, %[w]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vmovdqu %%ymm0, 0(%[acc])\n\t" "vmovdqu %%ymm1, 32(%[acc])\n\t"
      "vmovdqu %%ymm2, 64(%[acc])\n\t" "vmovdqu %%ymm3, 96(%[acc])\n\t"
      "vmovdqu %%ymm4, 128(%[acc])\n\t" "vmovdqu %%ymm5, 160(%[acc])\n\t"
      "vmovdqu %%ymm6, 192(%[acc])\n\t" "vmovdqu %%ymm7, 224(%[acc])\n\t"
      "vmovdqu %%ymm8, 256(%[acc])\n\t" "vmovdqu %%ymm9, 288(%[acc])\n\t"
      "vmovdqu %%ymm10, 320(%[acc])\n\t" "vmovdqu %%ymm11, 352(%[acc])\n\t"
      : [a0] "+r"(a0), [a3] "+r"(a3), [w] "+r"(panel), [n] "+r"(n)
      : [s] "r"(s), [acc] "r"(acc)
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
#undef TWOFILES_ROW
}

// MR rows x 16 outputs, dequantised into y (only the first `cols` outputs).
template <int MR>
void Tile(const Job& j, int64_t m0, int64_t p, int64_t cols) {
  __m256i acc[MR][2];
  Accumulate<MR>(reinterpret_cast<const int32_t*>(j.qx.get() + m0 * j.Ip), j.Ip / 2,
                 j.panels.get() + p * j.KP * kNR * 2, j.KP, acc);
  const int64_t o0 = p * kNR;
  const __m256 sw0 = _mm256_loadu_ps(j.sw_pad.get() + o0);
  const __m256 sw1 = _mm256_loadu_ps(j.sw_pad.get() + o0 + 8);
  for (int m = 0; m < MR; ++m) {
    const __m256 sx = _mm256_set1_ps(j.sx[m0 + m]);
    // (acc * sx) * sw: the reference's order of float operations.
    __m256 y0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[m][0]), sx), sw0);
    __m256 y1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[m][1]), sx), sw1);
    float* dst = j.y + (m0 + m) * j.O + o0;
    if (cols == kNR) {
      _mm256_storeu_ps(dst, y0);
      _mm256_storeu_ps(dst + 8, y1);
    } else {
      alignas(32) float tmp[kNR];
      _mm256_store_ps(tmp, y0);
      _mm256_store_ps(tmp + 8, y1);
      std::memcpy(dst, tmp, cols * sizeof(float));
    }
  }
}

template <int MR>
void TileRows(const Job& j, int64_t m0, int64_t rows, int64_t p, int64_t cols) {
  if constexpr (MR > 1) {
    if (rows < MR) return TileRows<MR - 1>(j, m0, rows, p, cols);
  }
  Tile<MR>(j, m0, p, cols);
}

// Rows [m_begin, m_end) times panels [p_begin, p_end): row tiles outside, panels inside, so a
// row tile is reused from L1 by every panel of the block.
void ComputeTask(const Job& j, int64_t m_begin, int64_t m_end, int64_t p_begin, int64_t p_end) {
  for (int64_t m0 = m_begin; m0 < m_end; m0 += kMR) {
    const int64_t rows = std::min<int64_t>(kMR, m_end - m0);
    for (int64_t p = p_begin; p < p_end; ++p)
      TileRows<kMR>(j, m0, rows, p, std::min<int64_t>(kNR, j.O - p * kNR));
  }
}

void Prepare(Job& j, int64_t b) {
  const int64_t n_quant = (j.M + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock;
  if (b < n_quant) {
    for (int64_t m = b * kQuantRowsPerBlock; m < std::min(j.M, (b + 1) * kQuantRowsPerBlock); ++m)
      QuantizeRow(j.x + m * j.I, j.I, j.Ip, j.qx.get() + m * j.Ip, j.sx.get() + m);
  } else {
    PackPanel(j, b - n_quant);
  }
}

// Claims and runs phase-1 blocks, waits for the claimed ones, then claims phase-2 tasks.
void Work(Job& j) {
  for (int64_t b; (b = j.next_prep.fetch_add(1, std::memory_order_relaxed)) < j.n_prep;) {
    Prepare(j, b);
    j.prep_done.fetch_add(1, std::memory_order_release);
  }
  while (j.prep_done.load(std::memory_order_acquire) < j.n_prep) _mm_pause();
  for (int64_t t; (t = j.next_task.fetch_add(1, std::memory_order_relaxed)) < j.n_tasks;) {
    const int64_t ob = t / j.n_m_chunks, mc = t % j.n_m_chunks;
    ComputeTask(j, mc * kRowsPerTask, std::min(j.M, (mc + 1) * kRowsPerTask),
                ob * kPanelsPerBlock, std::min(j.n_panels, (ob + 1) * kPanelsPerBlock));
    j.tasks_done.fetch_add(1, std::memory_order_release);
  }
}

using Matrix = ffi::Buffer<ffi::F32, 2>;
using Int8Matrix = ffi::Buffer<ffi::S8, 2>;
using Vector = ffi::Buffer<ffi::F32, 1>;

ffi::Error Int8GemmDynamicImpl(ffi::ThreadPool pool, Matrix x, Int8Matrix w, Vector scale,
                               ffi::Result<Matrix> y) {
  const int64_t M = x.dimensions()[0], I = x.dimensions()[1], O = w.dimensions()[0];
  if (w.dimensions()[1] != I || scale.dimensions()[0] != O || y->dimensions()[0] != M ||
      y->dimensions()[1] != O) {
    return ffi::Error::InvalidArgument(
        "int8_gemm_dynamic: expected x [M, I], w [O, I], scale [O] and y [M, O]");
  }
  if (M == 0 || O == 0) return ffi::Error::Success();
  auto job = std::make_shared<Job>();
  Job& j = *job;
  j.x = x.typed_data();
  j.w = w.typed_data();
  j.sw = scale.typed_data();
  j.y = y->typed_data();
  j.M = M;
  j.I = I;
  j.O = O;
  j.Ip = I + (I & 1);
  j.KP = j.Ip / 2;
  j.n_panels = (O + kNR - 1) / kNR;
  j.qx.reset(new int16_t[M * j.Ip]);
  j.sx.reset(new float[M]);
  j.panels.reset(new int16_t[j.n_panels * j.KP * kNR * 2]);
  j.sw_pad.reset(new float[j.n_panels * kNR]());
  std::memcpy(j.sw_pad.get(), j.sw, O * sizeof(float));
  j.n_prep = (M + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock + j.n_panels;
  j.n_m_chunks = (M + kRowsPerTask - 1) / kRowsPerTask;
  j.n_o_blocks = (j.n_panels + kPanelsPerBlock - 1) / kPanelsPerBlock;
  j.n_tasks = j.n_m_chunks * j.n_o_blocks;
  const int64_t helpers = std::min({pool.num_threads() - 1, j.n_tasks - 1, kMaxHelpers});
  // Each helper holds the job alive: it may start after the caller has finished everything.
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { Work(*job); });
  Work(j);
  while (j.tasks_done.load(std::memory_order_acquire) < j.n_tasks) _mm_pause();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesInt8GemmDynamic, Int8GemmDynamicImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Int8Matrix>()
                                  .Arg<Vector>()
                                  .Ret<Matrix>());
