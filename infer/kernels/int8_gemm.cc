// y[m, o] = sw[o] * sum_b float(acc[m, b, o]) * sx[m, b], acc[m, b, o] = sum over block b of
// qx[m, i] * w[o, i] in int32: float32 activations quantised to int8 on the fly in blocks of
// `block` consecutive inputs (sx[m, b] = max|x[m, block b]| / 127, qx = round(x / sx); the last
// block may be partial) times int8 weights with one scale per output row ("W8A8 dynamic", the
// blocks as llama.cpp's Q8_0), for XLA on x86 CPUs with AVX2 (an XLA FFI custom call; built by
// infer/cpu_kernels.py). Blocks rather than one scale per row: an outlier channel then coarsens
// only its own block's rounding.
//
// Why: prefill is bound by arithmetic, and float32 FMAs give 16 multiply-adds per cycle per
// core. Without AVX-VNNI, vpmaddwd multiplies int16 pairs and sums each pair into int32 (16
// multiply-adds per instruction, plus a vpaddd to accumulate); |127 * 128| * 2 fits easily, and
// a block's sum is exact in int32.
//
// Layout. Phase 1 converts both operands once per call into 32-bit units of k (two int16):
// activation rows [M, KU] with scales [n_blocks, M], and weight panels of kNR = 16 output rows,
// [O/16][KU][16] units, so one 32-byte load gives 8 outputs' units and one 32-bit broadcast gives
// a row's unit. Phase 2 computes tiles of kMR rows x 16 outputs with kMR * 2 int32 accumulator
// registers (all 16 ymm registers are then taken): a block's first unit sets them, the others
// add to them, and at the end of the block they are converted and folded into float32
// accumulators of the tile in L1 (one FMA with the block's broadcast scale). The fold costs
// ~5-10% against one scale per row (measured; 2 float ops per 32 integer ones at block 32). A task is a block of kPanelsPerBlock panels times a chunk of rows: each row tile
// (a few KiB) stays in L1 across the block's panels, and the panels (<= 192 KiB for I = 1536)
// stay in L2 across the chunk's row tiles.
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
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMR = 6;                 // rows per tile: 12 accumulators fill the ymm registers
constexpr int kNR = 16;                // outputs per panel: two ymm of 8 int32
constexpr int64_t kPanelsPerBlock = 4;
constexpr int64_t kRowsPerTask = kMR * 20;
constexpr int64_t kQuantRowsPerBlock = 16;

struct Job {
  const float* x;
  const int8_t* w;
  const float* sw;
  float* y;
  int64_t M, I, O, KU, n_panels;
  int64_t block, unit_block, n_blocks;  // inputs and units per block, blocks per row
  std::unique_ptr<uint32_t[]> qx;      // [M, KU] units of two int16
  std::unique_ptr<float[]> sx;         // [n_blocks, M]: a tile's rows are adjacent
  std::unique_ptr<uint32_t[]> panels;  // [n_panels, KU, kNR] units
  std::unique_ptr<float[]> sw_pad;     // [n_panels * kNR], zero past O
  int64_t n_m_chunks, n_o_blocks;
  twofiles::Tasks prep;   // phase 1: quantise row blocks of x, pack panels of w
  twofiles::Tasks tiles;  // phase 2: (row chunk, panel block) products
};

inline float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float AbsMax(const float* x, int64_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(abs_mask, _mm256_loadu_ps(x + i)));
  float amax = HorizontalMax(vmax);
  for (; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}

// One block of n inputs of an activation row to int16 at q, returning its scale. The same float
// operations as the XLA reference (multiply by 127 / absmax, round half to even), so both give
// identical integers.
float QuantizeBlock(const float* x, int64_t n, int16_t* q) {
  const float amax = AbsMax(x, n);
  // An all-zero block gets scale 0 and zeros (127 / 0 would make 0 * inf = NaN).
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  auto quantize8 = [&](int64_t i) {
    __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    return _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // The pack interleaves 128-bit lanes; the permute restores element order.
    __m256i ab = _mm256_permute4x64_epi64(_mm256_packs_epi32(quantize8(i), quantize8(i + 8)), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), ab);
  }
  for (; i < n; ++i)  // nearbyint: the current rounding mode, half to even
    q[i] = static_cast<int16_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(x[i] * inv))));
  return amax / 127.0f;
}

// One activation row to units, block by block, then a zero pad to a whole unit (odd I; its
// weights are zero too).
void QuantizeRow(const Job& j, int64_t m) {
  const float* x = j.x + m * j.I;
  int16_t* q = reinterpret_cast<int16_t*>(j.qx.get() + m * j.KU);
  for (int64_t b = 0; b < j.n_blocks; ++b) {
    const int64_t i0 = b * j.block;
    j.sx[b * j.M + m] = QuantizeBlock(x + i0, std::min(j.block, j.I - i0), q + i0);
  }
  if (j.I % 2) q[j.I] = 0;
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

// One k-unit of weight row o (zero past O or I): two sign-extended int16.
uint32_t WeightUnit(const Job& j, int64_t o, int64_t ku) {
  uint32_t unit = 0;
  for (int64_t h = 0; h < 2; ++h) {
    const int64_t i = ku * 2 + h;
    const int8_t w = (o < j.O && i < j.I) ? j.w[o * j.I + i] : 0;
    unit |= uint32_t(uint16_t(int16_t(w))) << (16 * h);
  }
  return unit;
}

// Weight rows o0 .. o0+15 to one panel [KU][16] of units: a 32-bit transpose of the rows
// sign-extended to int16, eight units of eight rows at a time.
void PackPanel(const Job& j, int64_t p) {
  const int64_t o0 = p * kNR;
  uint32_t* dst = j.panels.get() + p * j.KU * kNR;
  int64_t ku = 0;
  if (o0 + kNR <= j.O) {
    for (; (ku + 8) * 2 <= j.I; ku += 8) {
      for (int half = 0; half < 2; ++half) {
        __m256i r[8];
        for (int k = 0; k < 8; ++k) {
          const int8_t* src = j.w + (o0 + 8 * half + k) * j.I + ku * 2;
          r[k] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
        }
        Transpose8x8(r);  // r[k] = unit ku + k of the 8 rows
        for (int k = 0; k < 8; ++k)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (ku + k) * kNR + 8 * half), r[k]);
      }
    }
  }
  for (; ku < j.KU; ++ku)
    for (int64_t r = 0; r < kNR; ++r) dst[ku * kNR + r] = WeightUnit(j, o0 + r, ku);
}

// Where a tile's next block is: its rows' units x (row stride `stride` units), its panel, and
// its rows' scales sx (the next block's: + M). Blocks advances it past the blocks it did.
struct TileCursor {
  const uint32_t* x;
  int64_t stride;
  const uint32_t* panel;
  const float* sx;
  int64_t M;
};

// facc[m][0..15] += float(int32 products of the block) * sx[m] for `n_blocks` blocks of `units`
// k-units each, MR rows x 16 outputs: per unit two 32-byte weight loads, and per row one 32-bit
// broadcast of its unit and two multiply-adds; per block one fold.
template <int MR>
void Blocks(TileCursor& c, int64_t n_blocks, int64_t units, float* facc) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    __m256i acc[MR][2];
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
    for (int64_t ku = 0; ku < units; ++ku) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.panel));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.panel + 8));
      for (int m = 0; m < MR; ++m) {
        const __m256i xb = _mm256_set1_epi32(static_cast<int32_t>(c.x[m * c.stride]));
        acc[m][0] = _mm256_add_epi32(acc[m][0], _mm256_madd_epi16(xb, w0));
        acc[m][1] = _mm256_add_epi32(acc[m][1], _mm256_madd_epi16(xb, w1));
      }
      c.x += 1;
      c.panel += kNR;
    }
    for (int m = 0; m < MR; ++m) {
      const __m256 sx = _mm256_set1_ps(c.sx[m]);
      for (int v = 0; v < 2; ++v) {
        float* f = facc + m * kNR + 8 * v;
        _mm256_storeu_ps(f, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][v]), sx, _mm256_loadu_ps(f)));
      }
    }
    c.sx += c.M;
  }
}

// The same for 6 rows, in assembly: it needs all 16 ymm registers, and GCC 12 compiles the
// intrinsics with a register copy per accumulator per step, which fills the dispatch slots
// (measured ~1.05x float32 then). Registers: ymm0-11 accumulators (row m in ymm{2m, 2m+1}),
// ymm12-13 the unit's two weight vectors, ymm14 the broadcast unit or the fold's scale, ymm15 a
// product. Rows 0, 1, 2, 4 are at a0 + {0, 1, 2, 4} * s bytes, rows 3, 5 at a3 + {0, 2} * s.
#define TWOFILES_ROW(ADDR, C0, C1)         \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"     \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t" \
  "vpaddd %%ymm15, %%" C0 ", %%" C0 "\n\t" \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n\t" \
  "vpaddd %%ymm14, %%" C1 ", %%" C1 "\n\t"
// The first unit of a block sets the accumulators instead of adding to zeroed ones.
#define TWOFILES_FIRST_ROW(ADDR, C0, C1)       \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"         \
  "vpmaddwd %%ymm12, %%ymm14, %%" C0 "\n\t"    \
  "vpmaddwd %%ymm13, %%ymm14, %%" C1 "\n\t"
// One unit, at a0/a3 and w, then the pointers step to the next.
#define TWOFILES_UNIT(ROW)                                                                  \
  "vmovdqu (%[w]), %%ymm12\n\t"                                                             \
  "vmovdqu 32(%[w]), %%ymm13\n\t"                                                           \
  ROW("(%[a0])", "ymm0", "ymm1") ROW("(%[a0],%[s],1)", "ymm2", "ymm3")                      \
  ROW("(%[a0],%[s],2)", "ymm4", "ymm5") ROW("(%[a3])", "ymm6", "ymm7")                      \
  ROW("(%[a0],%[s],4)", "ymm8", "ymm9") ROW("(%[a3],%[s],2)", "ymm10", "ymm11")             \
  "add $4, %[a0]\n\t"                                                                       \
  "add $4, %[a3]\n\t"                                                                       \
  "add $64, %[w]\n\t"
// facc row (bytes F0, F1) += float(C0, C1) * the row's scale (byte S of the block's scales).
#define TWOFILES_FOLD_ROW(S, F0, F1, C0, C1)         \
  "vbroadcastss " S "(%[sx]), %%ymm14\n\t"           \
  "vcvtdq2ps %%" C0 ", %%" C0 "\n\t"                 \
  "vfmadd213ps " F0 "(%[f]), %%ymm14, %%" C0 "\n\t"  \
  "vmovups %%" C0 ", " F0 "(%[f])\n\t"               \
  "vcvtdq2ps %%" C1 ", %%" C1 "\n\t"                 \
  "vfmadd213ps " F1 "(%[f]), %%ymm14, %%" C1 "\n\t"  \
  "vmovups %%" C1 ", " F1 "(%[f])\n\t"
// n_blocks blocks of `units` k-units each. (Unrolling the unit loop measured no faster.)
#define TWOFILES_TILE6                                                                          \
  asm volatile(                                                                                 \
      "3:\n\t"                                                                                  \
      TWOFILES_UNIT(TWOFILES_FIRST_ROW)                                                         \
      "mov %[units], %[n]\n\t"                                                                  \
      "dec %[n]\n\t"                                                                            \
      "jz 2f\n\t"                                                                               \
      "1:\n\t"                                                                                  \
      TWOFILES_UNIT(TWOFILES_ROW)                                                               \
      "dec %[n]\n\t"                                                                            \
      "jnz 1b\n\t"                                                                              \
      "2:\n\t"                                                                                  \
      TWOFILES_FOLD_ROW("0", "0", "32", "ymm0", "ymm1")                                         \
      TWOFILES_FOLD_ROW("4", "64", "96", "ymm2", "ymm3")                                        \
      TWOFILES_FOLD_ROW("8", "128", "160", "ymm4", "ymm5")                                      \
      TWOFILES_FOLD_ROW("12", "192", "224", "ymm6", "ymm7")                                     \
      TWOFILES_FOLD_ROW("16", "256", "288", "ymm8", "ymm9")                                     \
      TWOFILES_FOLD_ROW("20", "320", "352", "ymm10", "ymm11")                                   \
      "add %[sx_step], %[sx]\n\t"                                                               \
      "dec %[nb]\n\t"                                                                           \
      "jnz 3b\n\t"                                                                              \
      : [a0] "+r"(a0), [a3] "+r"(a3), [w] "+r"(c.panel), [nb] "+r"(n_blocks), [n] "=&r"(n),   \
        [sx] "+r"(c.sx)                                                                         \
      : [s] "r"(s), [units] "r"(units), [sx_step] "r"(sx_step), [f] "r"(facc)                 \
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15")

template <>
void Blocks<6>(TileCursor& c, int64_t n_blocks, int64_t units, float* facc) {
  if (n_blocks <= 0 || units <= 0) return;
  const uint32_t *a0 = c.x, *a3 = c.x + 3 * c.stride;
  const int64_t s = c.stride * 4, sx_step = c.M * 4;
  int64_t n;
  TWOFILES_TILE6;
  c.x = a0;
}

#undef TWOFILES_TILE6
#undef TWOFILES_FOLD_ROW
#undef TWOFILES_UNIT
#undef TWOFILES_FIRST_ROW
#undef TWOFILES_ROW

// MR rows x 16 outputs, dequantised into y (only the first `cols` outputs): the whole blocks,
// then the partial last one.
template <int MR>
void Tile(const Job& j, int64_t m0, int64_t p, int64_t cols) {
  alignas(32) float facc[MR * kNR] = {};
  TileCursor c{j.qx.get() + m0 * j.KU, j.KU, j.panels.get() + p * j.KU * kNR, j.sx.get() + m0, j.M};
  const int64_t rest = j.KU % j.unit_block;
  Blocks<MR>(c, j.KU / j.unit_block, j.unit_block, facc);
  Blocks<MR>(c, rest ? 1 : 0, rest, facc);
  const int64_t o0 = p * kNR;
  const __m256 sw0 = _mm256_loadu_ps(j.sw_pad.get() + o0);
  const __m256 sw1 = _mm256_loadu_ps(j.sw_pad.get() + o0 + 8);
  for (int m = 0; m < MR; ++m) {
    __m256 y0 = _mm256_mul_ps(_mm256_load_ps(facc + m * kNR), sw0);
    __m256 y1 = _mm256_mul_ps(_mm256_load_ps(facc + m * kNR + 8), sw1);
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
  j.prep.Run([&](int64_t b) { Prepare(j, b); });
  j.prep.Wait();
  j.tiles.Run([&](int64_t t) {
    const int64_t ob = t / j.n_m_chunks, mc = t % j.n_m_chunks;
    ComputeTask(j, mc * kRowsPerTask, std::min(j.M, (mc + 1) * kRowsPerTask),
                ob * kPanelsPerBlock, std::min(j.n_panels, (ob + 1) * kPanelsPerBlock));
  });
}

using Matrix = ffi::Buffer<ffi::F32, 2>;
using Int8Matrix = ffi::Buffer<ffi::S8, 2>;
using Vector = ffi::Buffer<ffi::F32, 1>;

ffi::Error GemmDynamic(ffi::ThreadPool pool, Matrix x, Int8Matrix w, Vector scale, int64_t block,
                       ffi::Result<Matrix> y) {
  const int64_t M = x.dimensions()[0], I = x.dimensions()[1], O = w.dimensions()[0];
  if (w.dimensions()[1] != I || scale.dimensions()[0] != O || y->dimensions()[0] != M ||
      y->dimensions()[1] != O) {
    return ffi::Error::InvalidArgument(
        "int8_gemm_dynamic: expected x [M, I], w [O, I], scale [O] and y [M, O]");
  }
  // A unit of k (two inputs) must not straddle two blocks.
  if (block <= 0 || block % 2 != 0) {
    return ffi::Error::InvalidArgument("int8_gemm_dynamic: block must be positive and even");
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
  j.KU = (I + 1) / 2;
  j.block = block;
  j.unit_block = block / 2;
  j.n_blocks = (I + block - 1) / block;
  j.n_panels = (O + kNR - 1) / kNR;
  j.qx.reset(new uint32_t[M * j.KU]);
  j.sx.reset(new float[j.n_blocks * M]);
  j.panels.reset(new uint32_t[j.n_panels * j.KU * kNR]);
  j.sw_pad.reset(new float[j.n_panels * kNR]());
  std::memcpy(j.sw_pad.get(), j.sw, O * sizeof(float));
  j.prep.n = (M + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock + j.n_panels;
  j.n_m_chunks = (M + kRowsPerTask - 1) / kRowsPerTask;
  j.n_o_blocks = (j.n_panels + kPanelsPerBlock - 1) / kPanelsPerBlock;
  j.tiles.n = j.n_m_chunks * j.n_o_blocks;
  twofiles::Spread(pool, job, j.tiles.n, Work);
  j.tiles.Wait();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesInt8GemmDynamic, GemmDynamic,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Int8Matrix>()
                                  .Arg<Vector>()
                                  .Attr<int64_t>("block")
                                  .Ret<Matrix>());
