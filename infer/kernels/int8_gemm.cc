// y[m, o] = (float(acc[m, o]) * sx[m]) * sw[o], acc[m, o] = sum_i qx[m, i] * w[o, i] in int32:
// float32 activations quantised per row on the fly (sx[m] = max|x[m, :]| / Q, qx = round(x /
// sx), Q = 127 or 63) times int8 weights with one scale per output row ("W8A8 dynamic"), for XLA
// on x86 CPUs with AVX2 (an XLA FFI custom call; built by infer/cpu_kernels.py).
//
// Why: prefill is bound by arithmetic, and float32 FMAs give 16 multiply-adds per cycle per
// core. Without AVX-VNNI there are two integer routes, both exact in int32:
//  - 8-bit activations (Q = 127), "pairs": vpmaddwd multiplies int16 pairs and sums each pair
//    into int32 (16 multiply-adds per instruction, plus a vpaddd to accumulate); |127 * 128| * 2
//    fits easily. Measured ~1.6x float32 here.
//  - 7-bit activations (Q = 63), "quads": vpmaddubsw multiplies u8 x s8 and sums adjacent pairs
//    into int16 with saturation (32 per instruction), vpmaddwd by ones widens them to int32. With
//    u = q + 64 in [1, 127], |u * w| * 2 <= 127 * 128 * 2 < 2^15, so it never saturates; the
//    offset is removed with 64 * sum_i w[o, i]. Three instructions per 32 multiply-adds instead
//    of four: measured ~2.0x float32, at twice the activation rounding error.
//
// Layout. Phase 1 converts both operands once per call into 32-bit units of k (two int16 or four
// u8/s8): activation rows [M, KU] and weight panels of kNR = 16 output rows, [O/16][KU][16]
// units, so one 32-byte load gives 8 outputs' units and one 32-bit broadcast gives a row's unit.
// Phase 2 computes tiles of kMR rows x 16 outputs with kMR * 2 accumulator registers. A task is
// a block of kPanelsPerBlock panels times a chunk of rows: each row tile (a few KiB) stays in L1
// across the block's panels, and the panels (<= 192 KiB for I = 1536) stay in L2 across the
// chunk's row tiles.
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
  bool quads;                          // 7-bit activations in u8 quads, else int16 pairs
  int64_t M, I, O, per_unit, KU, n_panels;
  std::unique_ptr<uint32_t[]> qx;      // [M, KU] units
  std::unique_ptr<float[]> sx;         // [M]
  std::unique_ptr<uint32_t[]> panels;  // [n_panels, KU, kNR] units
  std::unique_ptr<float[]> sw_pad;     // [n_panels * kNR], zero past O
  std::unique_ptr<int32_t[]> offset;   // quads: 64 * sum_i w[o, i], [n_panels * kNR]
  int64_t n_prep, n_m_chunks, n_o_blocks, n_tasks;
  std::atomic<int64_t> next_prep{0}, prep_done{0}, next_task{0}, tasks_done{0};
};

inline float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One activation row to units (int16 pairs, or u8 quads holding q + 64) with its scale. The
// same float operations as the XLA reference (multiply by Q / absmax, round half to even), so
// both give identical integers.
void QuantizeRow(const Job& j, int64_t m) {
  const float* x = j.x + m * j.I;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= j.I; i += 8)
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(abs_mask, _mm256_loadu_ps(x + i)));
  float amax = HorizontalMax(vmax);
  for (; i < j.I; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float qmax = j.quads ? 63.0f : 127.0f;
  // An all-zero row gets scale 0 and zeros (Q / 0 would make 0 * inf = NaN).
  const float inv = amax > 0.0f ? qmax / amax : 0.0f;
  j.sx[m] = amax / qmax;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-static_cast<int>(qmax));
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(qmax));
  auto quantize8 = [&](int64_t i) {
    __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    return _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
  };
  i = 0;
  if (j.quads) {
    uint8_t* q = reinterpret_cast<uint8_t*>(j.qx.get() + m * j.KU);
    const __m256i off = _mm256_set1_epi16(64);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; i + 32 <= j.I; i += 32) {
      // The packs interleave 128-bit lanes; the permute restores element order.
      __m256i ab = _mm256_add_epi16(_mm256_packs_epi32(quantize8(i), quantize8(i + 8)), off);
      __m256i cd = _mm256_add_epi16(_mm256_packs_epi32(quantize8(i + 16), quantize8(i + 24)), off);
      __m256i u = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), u);
    }
    for (; i < j.I; ++i)
      q[i] = static_cast<uint8_t>(std::min(63.0f, std::max(-63.0f, std::nearbyint(x[i] * inv))) + 64);
    for (; i < j.KU * 4; ++i) q[i] = 64;  // the pad (its weights are 0)
  } else {
    int16_t* q = reinterpret_cast<int16_t*>(j.qx.get() + m * j.KU);
    for (; i + 16 <= j.I; i += 16) {
      __m256i ab = _mm256_permute4x64_epi64(_mm256_packs_epi32(quantize8(i), quantize8(i + 8)), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), ab);
    }
    for (; i < j.I; ++i)  // nearbyint: the current rounding mode, half to even
      q[i] = static_cast<int16_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(x[i] * inv))));
    for (; i < j.KU * 2; ++i) q[i] = 0;  // the pad (its weights are 0 too)
  }
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

// One k-unit of weight row o (zero past O or I): two sign-extended int16 or four int8.
uint32_t WeightUnit(const Job& j, int64_t o, int64_t ku) {
  uint32_t unit = 0;
  for (int64_t h = 0; h < j.per_unit; ++h) {
    const int64_t i = ku * j.per_unit + h;
    const int8_t w = (o < j.O && i < j.I) ? j.w[o * j.I + i] : 0;
    unit |= j.quads ? uint32_t(uint8_t(w)) << (8 * h) : uint32_t(uint16_t(int16_t(w))) << (16 * h);
  }
  return unit;
}

// sum_i w[i] (for the quads' offset correction).
int32_t RowSum(const int8_t* w, int64_t I) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 16 <= I; i += 16) {
    const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(w16, ones));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int32_t sum = 0;
  for (int k = 0; k < 8; ++k) sum += lanes[k];
  for (; i < I; ++i) sum += w[i];
  return sum;
}

// Weight rows o0 .. o0+15 to one panel [KU][16] of units: a 32-bit transpose of the rows
// (sign-extended to int16 for pairs), eight units of eight rows at a time.
void PackPanel(const Job& j, int64_t p) {
  const int64_t o0 = p * kNR;
  uint32_t* dst = j.panels.get() + p * j.KU * kNR;
  int64_t ku = 0;
  if (o0 + kNR <= j.O) {
    for (; (ku + 8) * j.per_unit <= j.I; ku += 8) {
      for (int half = 0; half < 2; ++half) {
        __m256i r[8];
        for (int k = 0; k < 8; ++k) {
          const int8_t* src = j.w + (o0 + 8 * half + k) * j.I + ku * j.per_unit;
          r[k] = j.quads ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))
                         : _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
        }
        Transpose8x8(r);  // r[k] = unit ku + k of the 8 rows
        for (int k = 0; k < 8; ++k)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (ku + k) * kNR + 8 * half), r[k]);
      }
    }
  }
  for (; ku < j.KU; ++ku)
    for (int64_t r = 0; r < kNR; ++r) dst[ku * kNR + r] = WeightUnit(j, o0 + r, ku);
  if (j.quads) {
    for (int64_t r = 0; r < kNR; ++r)
      j.offset[o0 + r] = o0 + r < j.O ? 64 * RowSum(j.w + (o0 + r) * j.I, j.I) : 0;
  }
}

// The products of MR rows x 16 outputs over all k-units, in int32: per unit two 32-byte weight
// loads, and per row one 32-bit broadcast of its unit and two multiply-add sequences.
template <bool kQuads, int MR>
void Accumulate(const uint32_t* x, int64_t stride, const uint32_t* panel, int64_t KU,
                __m256i acc[][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  auto dot = [&](__m256i xb, __m256i w) {
    return kQuads ? _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w), ones) : _mm256_madd_epi16(xb, w);
  };
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
  for (int64_t ku = 0; ku < KU; ++ku) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + ku * kNR));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + ku * kNR + 8));
    for (int m = 0; m < MR; ++m) {
      const __m256i xb = _mm256_set1_epi32(static_cast<int32_t>(x[m * stride + ku]));
      acc[m][0] = _mm256_add_epi32(acc[m][0], dot(xb, w0));
      acc[m][1] = _mm256_add_epi32(acc[m][1], dot(xb, w1));
    }
  }
}

// The same for 6 rows, in assembly: it needs all 16 ymm registers, and GCC 12 compiles the
// intrinsics with a register copy per accumulator per step, which fills the dispatch slots
// (measured ~1.05x float32 then). Registers: ymm0-11 accumulators (row m in ymm{2m, 2m+1}),
// ymm12 the first weight vector, ymm13 the second (pairs) or int16 ones (quads, whose second
// weight vector is a memory operand), ymm14 the broadcast unit, ymm15 a product.
#define TWOFILES_PAIRS_ROW(ADDR, C0, C1)   \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"     \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t" \
  "vpaddd %%ymm15, %%" C0 ", %%" C0 "\n\t" \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n\t" \
  "vpaddd %%ymm14, %%" C1 ", %%" C1 "\n\t"
#define TWOFILES_QUADS_ROW(ADDR, C0, C1)         \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"           \
  "vpmaddubsw %%ymm12, %%ymm14, %%ymm15\n\t"     \
  "vpmaddwd %%ymm13, %%ymm15, %%ymm15\n\t"       \
  "vpaddd %%ymm15, %%" C0 ", %%" C0 "\n\t"       \
  "vpmaddubsw 32(%[w]), %%ymm14, %%ymm14\n\t"    \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%" C1 ", %%" C1 "\n\t"
// Rows 0, 1, 2, 4 are a0 + {0, 1, 2, 4} * s bytes, rows 3, 5 are a3 + {0, 2} * s.
#define TWOFILES_TILE6(SETUP, LOAD_WEIGHTS, ROW)                                                \
  asm volatile(                                                                                 \
      SETUP                                                                                     \
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"                                                        \
      "vmovdqa %%ymm0, %%ymm1\n\t" "vmovdqa %%ymm0, %%ymm2\n\t" "vmovdqa %%ymm0, %%ymm3\n\t"    \
      "vmovdqa %%ymm0, %%ymm4\n\t" "vmovdqa %%ymm0, %%ymm5\n\t" "vmovdqa %%ymm0, %%ymm6\n\t"    \
      "vmovdqa %%ymm0, %%ymm7\n\t" "vmovdqa %%ymm0, %%ymm8\n\t" "vmovdqa %%ymm0, %%ymm9\n\t"    \
      "vmovdqa %%ymm0, %%ymm10\n\t" "vmovdqa %%ymm0, %%ymm11\n\t"                               \
      "test %[n], %[n]\n\t"                                                                     \
      "jle 2f\n\t"                                                                              \
      "1:\n\t"                                                                                  \
      LOAD_WEIGHTS                                                                              \
      ROW("(%[a0])", "ymm0", "ymm1")                                                            \
      ROW("(%[a0],%[s],1)", "ymm2", "ymm3")                                                     \
      ROW("(%[a0],%[s],2)", "ymm4", "ymm5")                                                     \
      ROW("(%[a3])", "ymm6", "ymm7")                                                            \
      ROW("(%[a0],%[s],4)", "ymm8", "ymm9")                                                     \
      ROW("(%[a3],%[s],2)", "ymm10", "ymm11")                                                   \
      "add $4, %[a0]\n\t"                                                                       \
      "add $4, %[a3]\n\t"                                                                       \
      "add $64, %[w]\n\t"                                                                       \
      "dec %[n]\n\t"                                                                            \
      "jnz 1b\n\t"                                                                              \
      "2:\n\t"                                                                                  \
      "vmovdqu %%ymm0, 0(%[acc])\n\t" "vmovdqu %%ymm1, 32(%[acc])\n\t"                          \
      "vmovdqu %%ymm2, 64(%[acc])\n\t" "vmovdqu %%ymm3, 96(%[acc])\n\t"                         \
      "vmovdqu %%ymm4, 128(%[acc])\n\t" "vmovdqu %%ymm5, 160(%[acc])\n\t"                       \
      "vmovdqu %%ymm6, 192(%[acc])\n\t" "vmovdqu %%ymm7, 224(%[acc])\n\t"                       \
      "vmovdqu %%ymm8, 256(%[acc])\n\t" "vmovdqu %%ymm9, 288(%[acc])\n\t"                       \
      "vmovdqu %%ymm10, 320(%[acc])\n\t" "vmovdqu %%ymm11, 352(%[acc])\n\t"                     \
      : [a0] "+r"(a0), [a3] "+r"(a3), [w] "+r"(panel), [n] "+r"(n)                              \
      : [s] "r"(s), [acc] "r"(acc), [ones] "r"(kOnes)                                           \
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15")

alignas(32) constexpr int16_t kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

template <>
void Accumulate<false, 6>(const uint32_t* x, int64_t stride, const uint32_t* panel, int64_t KU,
                          __m256i acc[][2]) {
  const uint32_t *a0 = x, *a3 = x + 3 * stride;
  const int64_t s = stride * 4;
  int64_t n = KU;
  TWOFILES_TILE6("", "vmovdqu (%[w]), %%ymm12\n\tvmovdqu 32(%[w]), %%ymm13\n\t",
                 TWOFILES_PAIRS_ROW);
}

template <>
void Accumulate<true, 6>(const uint32_t* x, int64_t stride, const uint32_t* panel, int64_t KU,
                         __m256i acc[][2]) {
  const uint32_t *a0 = x, *a3 = x + 3 * stride;
  const int64_t s = stride * 4;
  int64_t n = KU;
  TWOFILES_TILE6("vmovdqa (%[ones]), %%ymm13\n\t", "vmovdqu (%[w]), %%ymm12\n\t",
                 TWOFILES_QUADS_ROW);
}

#undef TWOFILES_TILE6
#undef TWOFILES_QUADS_ROW
#undef TWOFILES_PAIRS_ROW

// MR rows x 16 outputs, dequantised into y (only the first `cols` outputs).
template <int MR>
void Tile(const Job& j, int64_t m0, int64_t p, int64_t cols) {
  __m256i acc[MR][2];
  const uint32_t* x = j.qx.get() + m0 * j.KU;
  const uint32_t* panel = j.panels.get() + p * j.KU * kNR;
  if (j.quads) {
    Accumulate<true, MR>(x, j.KU, panel, j.KU, acc);
    // sum_i (q + 64) w = acc, so sum_i q w = acc - 64 sum_i w.
    for (int v = 0; v < 2; ++v) {
      const __m256i off = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(j.offset.get() + p * kNR + 8 * v));
      for (int m = 0; m < MR; ++m) acc[m][v] = _mm256_sub_epi32(acc[m][v], off);
    }
  } else {
    Accumulate<false, MR>(x, j.KU, panel, j.KU, acc);
  }
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

void Prepare(const Job& j, int64_t b) {
  const int64_t n_quant = (j.M + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock;
  if (b < n_quant) {
    for (int64_t m = b * kQuantRowsPerBlock; m < std::min(j.M, (b + 1) * kQuantRowsPerBlock); ++m)
      QuantizeRow(j, m);
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

ffi::Error GemmDynamic(bool quads, ffi::ThreadPool pool, Matrix x, Int8Matrix w,
                       Vector scale, Matrix* y) {
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
  j.quads = quads;
  j.M = M;
  j.I = I;
  j.O = O;
  j.per_unit = quads ? 4 : 2;
  j.KU = (I + j.per_unit - 1) / j.per_unit;
  j.n_panels = (O + kNR - 1) / kNR;
  j.qx.reset(new uint32_t[M * j.KU]);
  j.sx.reset(new float[M]);
  j.panels.reset(new uint32_t[j.n_panels * j.KU * kNR]);
  j.sw_pad.reset(new float[j.n_panels * kNR]());
  std::memcpy(j.sw_pad.get(), j.sw, O * sizeof(float));
  if (quads) j.offset.reset(new int32_t[j.n_panels * kNR]);
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

ffi::Error GemmDynamic8(ffi::ThreadPool pool, Matrix x, Int8Matrix w, Vector scale,
                        ffi::Result<Matrix> y) {
  return GemmDynamic(false, pool, x, w, scale, &*y);
}

ffi::Error GemmDynamic7(ffi::ThreadPool pool, Matrix x, Int8Matrix w, Vector scale,
                        ffi::Result<Matrix> y) {
  return GemmDynamic(true, pool, x, w, scale, &*y);
}

}  // namespace

#define TWOFILES_BIND                \
  ffi::Ffi::Bind()                   \
      .Ctx<ffi::ThreadPool>()        \
      .Arg<Matrix>()                 \
      .Arg<Int8Matrix>()             \
      .Arg<Vector>()                 \
      .Ret<Matrix>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesInt8GemmDynamic, GemmDynamic8, TWOFILES_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesInt8GemmDynamic7, GemmDynamic7, TWOFILES_BIND);
