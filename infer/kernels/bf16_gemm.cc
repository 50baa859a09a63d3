// C = op(A) op(B) in bf16, summed in float32, for the bf16 training step's matmuls
// (infer/kernels/bf16_gemm.py; train config kernels.matmul = bf16):
//
//   A [M][K] or, with trans_a, [K][M];  B [K][N] or, with trans_b, [N][K];  C [M][N]
//
// covers every matmul of the step: a projection's forward (x W), its input gradient (dy W^T:
// trans_b) and its weight gradient (x^T dy: trans_a, the tokens contracted). M, N and K must
// be multiples of 32 (the Python side sends other shapes to XLA). Float32 operands are rounded
// to bf16 (nearest even, as XLA's convert) as they are read; C is float32 or bf16 (the float32
// sums rounded once, at the end: BlockSums). The products run on one of two engines
// (bf16_engine.h): Intel AMX tiles, or AVX512_BF16's vdpbf16ps (AMD Zen 4 / 5).
//
// Why: on this project's 2-core Xeon (family 6 model 167, AMX-BF16) XLA:CPU's bf16 dots
// (YNNPACK) ran the bench step's shapes at 863-1494 GFLOP/s alone and 410-950 inside the step,
// while torch's oneDNN ran the same shapes at 2462-3145 (benchmarks/train_throughput.py); a
// register-only loop of tdpbf16ps reaches 3370 GFLOP/s on one core. On the Zen 5 (family 26
// model 2) XLA's bf16 dots run at vdpbf16ps's rate in the forward, but its weight gradients
// (the tokens contracted) at 250-380 GFLOP/s, and the step converts and transposes every
// activation and cotangent for them first.
//
// How: B is first packed into tile order, its 16-pair-row x 16-column tiles in the pair layout
// both engines take ([k/2][n][2]), 1 KB each, the tiles of one 16-column strip consecutive
// along K; A^T too (its row pairs interleaved, then a 16 x 16 32-bit register transpose), and
// for AMX A where it comes as float32 or with rows a multiple of 4 KB apart (the 16 rows of a
// tile would meet in one L1 set); otherwise A is read in place. Packing is spread over the
// threads (tasks cut so that each source row is read whole and in order: PackTask), then the
// products: C in blocks of up to 512 x 512 per task, K in passes of 512.
//   - AMX (ProductTask): per 32 x 32 of C four accumulator tiles (0-3), two tiles of A (4, 5)
//     and two of B (6, 7): four tdpbf16ps per four tile loads, A's 32-row strip reused from
//     L1 across the block's columns.
//   - vdpbf16ps (DotTask): register blocks of 4 rows x 64 columns (x 32 for a block's last 32
//     columns), A's pairs broadcast from its rows (float32 rows rounded into a 4-row buffer
//     per K pass), B's pair rows one vector each.
//
// Measured on the Xeon (best of 10, under the lock; XLA's bf16 einsum with a float32 result
// against this kernel, GFLOP/s): x W at 4096 x 384 x 1152 1581 / 1784, the MLP's dW (x^T dy,
// 4096 tokens contracted, 384 x 2048) 195 / 1233, a loss chunk's dh (1024 x 8192 x 384, B
// transposed) 1222 / 1376. What holds AMX below its peak, from microbenchmarks on one core
// (/tmp, 32 x 32 blocks as here): 2700 GFLOP/s with the tiles in L1 on zeros, 1800 on random
// bf16 (the tile unit's power), and ~25% less once each block's float32 C goes to memory; the
// float32 result (4 bytes per M x N for 2K flops) makes small-K products bandwidth-bound. The
// bench step (benchmarks/train_throughput.py, twofiles-bf16-flash against -gemm, 8 rounds
// interleaved): 754 -> 686 ms median.
// On the Zen 5 (2 cores, same benchmark of single products, float32 operands as the step
// hands them, XLA / this kernel, GFLOP/s): x W 4096 x 384 x 2048 869 / 876, the down
// projection 4096 x 1024 x 384 809 / 824, its dx 4096 x 2048 x 384 (B transposed) 804 / 834,
// the MLP's dW 336 / 726 and the down projection's 259 / 718, a loss chunk's dh 895 / 910.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "xla/ffi/api/ffi.h"
#include "amx.h"
#include "bf16_engine.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

using bf16 = uint16_t;
constexpr int64_t kTile = 512;      // bf16 values in one packed tile (16 x 32)
constexpr int64_t kBlockK = 512;    // K per pass over a C block
constexpr int64_t kBlockMN = 512;   // the largest C block a task computes, rows and columns

struct Job {
  const void *a, *b;      // bf16 or float32 (rounded to bf16 while packing)
  void* c;                // float32 or, with c_bf16, bf16
  bool c_bf16;
  int64_t M, N, K;
  bool ta, tb;
  bool pack_a;            // A's tiles packed (else read in place)
  bool b_in_task;         // B's tiles packed by each product task for its own block (DotTask)
  bf16 *ap, *bp;          // packed: [M/16][K/32] and [N/16][K/32] tiles
  int64_t mt, nt;         // a product task's C block
  twofiles::Tasks pack;   // A's pack tasks (if packed), then B's: SideA, SideB
  twofiles::Tasks mul;    // ceil(M/mt) x ceil(N/nt) C blocks
  twofiles::Engine engine;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16")

#define TF_INLINE inline __attribute__((always_inline))

// 32 values from p as 32 bf16 in a register (float32 rounded to nearest even, as XLA's
// convert does).
TF_INLINE __m512 Load32(const bf16* p) { return _mm512_loadu_ps(p); }
TF_INLINE __m512 Load32(const float* p) {
  return (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
}

// 16 values from p as bf16 in the low halves of 16 32-bit lanes.
TF_INLINE __m512i Load16(const bf16* p) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
TF_INLINE __m512i Load16(const float* p) {
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(p)));
}

// 16 values of row x and of row y as 16 pairs (x[i], y[i]).
template <class T>
TF_INLINE __m512 Pairs(const T* x, const T* y) {
  return _mm512_castsi512_ps(_mm512_or_si512(Load16(x), _mm512_slli_epi32(Load16(y), 16)));
}

TF_INLINE void StoreTile(const __m512 r[16], bool transpose, bf16* dst) {
  __m512 o[16];
  if (transpose) twofiles::Transpose16(r, o);
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + 32 * i, transpose ? o[i] : r[i]);
}

// One tile of 16 rows x 32 columns of `src` (rows `ld` apart) copied as is: A's tiles, or B's
// from B^T, whose rows of 32 K values are 16 pairs each, then transposed so that pair row p
// holds column c's pair at c (`transpose`).
template <class T>
TF_INLINE void RowsTile(const T* src, int64_t ld, bool transpose, bf16* dst) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = Load32(src + i * ld);
  StoreTile(r, transpose, dst);
}

// One tile from 32 rows x 16 columns of `src` (rows `ld` apart) paired along the rows: B's
// pair layout from B [K][N] as is, A's rows from A^T [K][M] once transposed.
template <class T>
TF_INLINE void PairsTile(const T* src, int64_t ld, bool transpose, bf16* dst) {
  __m512 r[16];
  for (int p = 0; p < 16; ++p) r[p] = Pairs(src + 2 * p * ld, src + (2 * p + 1) * ld);
  StoreTile(r, transpose, dst);
}

// Pack tasks, of two shapes. The rows layouts (A [M][K], B^T [N][K]: tiles cut from rows along
// K) go by strips, kGroup strips of 16 rows a task over all K: each source row is read along
// its length. The pairs layouts (B [K][N], A^T [K][M]: tiles from pairs of rows) go by K, kKGroup
// chunks of 32 rows a task over all strips, so that each row is read whole and in order: a task
// of a few strips read 256 bytes of every row at strides of N x 4 bytes, a new page each, and
// the hardware prefetchers, which stay within a page, did not follow.
constexpr int64_t kGroup = 4, kKGroup = 4;

struct PackSide {
  bool pairs;     // tiles from pairs of rows (by K), else from rows (by strips)
  int64_t tasks;
};

PackSide SideA(const Job& j) {
  if (!j.pack_a) return {false, 0};
  return j.ta ? PackSide{true, (j.K / 32 + kKGroup - 1) / kKGroup}
              : PackSide{false, (j.M / 16 + kGroup - 1) / kGroup};
}

PackSide SideB(const Job& j) {
  if (j.b_in_task) return {true, 0};
  return j.tb ? PackSide{false, (j.N / 16 + kGroup - 1) / kGroup}
              : PackSide{true, (j.K / 32 + kKGroup - 1) / kKGroup};
}

template <class TA, class TB>
void PackTask(const Job& j, int64_t s) {
  const int64_t kc = j.K / 32;
  const PackSide a_side = SideA(j);
  const bool is_a = s < a_side.tasks;
  const PackSide side = is_a ? a_side : SideB(j);
  const int64_t t = is_a ? s : s - a_side.tasks, strips = (is_a ? j.M : j.N) / 16;
  const int64_t k_lo = side.pairs ? t * kKGroup : 0;
  const int64_t k_hi = side.pairs ? std::min(kc, k_lo + kKGroup) : kc;
  const int64_t s_lo = side.pairs ? 0 : t * kGroup;
  const int64_t s_hi = side.pairs ? strips : std::min(strips, s_lo + kGroup);
  const TA* a = static_cast<const TA*>(j.a);
  const TB* b = static_cast<const TB*>(j.b);
  for (int64_t k = k_lo; k < k_hi; ++k) {
    const int64_t k0 = 32 * k;
    for (int64_t st = s_lo; st < s_hi; ++st) {
      const int64_t i0 = 16 * st;
      bf16* dst = (is_a ? j.ap : j.bp) + (st * kc + k) * kTile;
      if (is_a) {
        if (j.ta)
          PairsTile(a + k0 * j.M + i0, j.M, true, dst);   // A^T [K][M]
        else
          RowsTile(a + i0 * j.K + k0, j.K, false, dst);   // A [M][K]
      } else {
        if (j.tb)
          RowsTile(b + i0 * j.K + k0, j.K, true, dst);    // B^T [N][K]
        else
          PairsTile(b + k0 * j.N + i0, j.N, false, dst);  // B [K][N]
      }
    }
  }
}

// Where a task's C block [m0, m1) x [n0, n1) is summed: in C itself for a float32 result, else
// in a float32 block of the thread's (the K passes add to their float32 sums; a bf16 result
// saves its consumer half the bytes), rounded into the bf16 result by Finish() (AMX) or by the
// last pass's register blocks (vdpbf16ps: DotBlock).
struct BlockSums {
  BlockSums(const Job& j, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
      : j_(j), m0_(m0), m1_(m1), n0_(n0), n1_(n1) {
    if (j.c_bf16)
      base_ = twofiles::ThreadScratch<float, 2>(j.mt * j.nt), ld = j.nt;
    else
      base_ = static_cast<float*>(j.c) + m0 * j.N + n0, ld = j.N;
  }
  float* At(int64_t m, int64_t n) const { return base_ + (m - m0_) * ld + (n - n0_); }
  void Finish() const {
    if (!j_.c_bf16) return;
    for (int64_t m = m0_; m < m1_; ++m) {
      const float* from = At(m, n0_);
      bf16* to = static_cast<bf16*>(j_.c) + m * j_.N + n0_;
      for (int64_t n = 0; n < n1_ - n0_; n += 32)
        _mm512_storeu_si512(to + n, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(from + n + 16),
                                                                 _mm512_loadu_ps(from + n)));
    }
  }
  int64_t ld;

 private:
  const Job& j_;
  int64_t m0_, m1_, n0_, n1_;
  float* base_;
};

// C block (task) of rows [m0, m1) and columns [n0, n1), all multiples of 32.
void ProductTask(const Job& j, int64_t task) {
  const int64_t bn = (j.N + j.nt - 1) / j.nt, kc = j.K / 32;
  const int64_t m0 = task / bn * j.mt, n0 = task % bn * j.nt;
  const int64_t m1 = std::min(j.M, m0 + j.mt), n1 = std::min(j.N, n0 + j.nt);
  const BlockSums sums(j, m0, m1, n0, n1);
  // A's tiles: packed (1 KB each, 64-byte rows) or read in place (rows K apart).
  const int64_t a_step = j.pack_a ? kTile : 32, a_ld = j.pack_a ? 64 : 2 * j.K;
  const int64_t a_strip = j.pack_a ? kc * kTile : 16 * j.K;
  for (int64_t k0 = 0; k0 < kc; k0 += kBlockK / 32) {
    const int64_t k1 = std::min(kc, k0 + kBlockK / 32);
    for (int64_t m = m0; m < m1; m += 32) {
      const bf16* a0 = j.pack_a ? j.ap + (m / 16) * a_strip
                                : static_cast<const bf16*>(j.a) + m * j.K;
      const bf16* a1 = a0 + a_strip;
      for (int64_t n = n0; n < n1; n += 32) {
        const bf16* b0 = j.bp + (n / 16) * kc * kTile;
        const bf16* b1 = b0 + kc * kTile;
        float* c0 = sums.At(m, n);
        float* c1 = c0 + 16 * sums.ld;
        const int64_t ldc = sums.ld * 4;
        if (k0 == 0) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        } else {
          _tile_loadd(0, c0, ldc);
          _tile_loadd(1, c0 + 16, ldc);
          _tile_loadd(2, c1, ldc);
          _tile_loadd(3, c1 + 16, ldc);
        }
        for (int64_t k = k0; k < k1; ++k) {
          _tile_loadd(4, a0 + k * a_step, a_ld);
          _tile_loadd(6, b0 + k * kTile, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_loadd(7, b1 + k * kTile, 64);
          _tile_dpbf16ps(1, 4, 7);
          _tile_loadd(5, a1 + k * a_step, a_ld);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c0, ldc);
        _tile_stored(1, c0 + 16, ldc);
        _tile_stored(2, c1, ldc);
        _tile_stored(3, c1 + 16, ldc);
      }
    }
  }
  sums.Finish();
}

// The same C block on vdpbf16ps (no AMX: AMD Zen 4 / 5), in register blocks of R rows x C
// strips of 16 columns: R x C float accumulators, each 32-bit pair of A's row broadcast once
// into C products with B's pair rows (one vector each, 64 bytes: the packed tiles' pair layout
// is the instruction's), each vector of B shared by the R rows. `a` and `b` point at chunk k0
// of 32 K values, `nk` chunks follow; A's rows are `a_ld` apart and its chunks `a_step` (in
// one 16-row strip when packed: R divides 16).
// With `out` (the last K pass of a bf16 result) the sums go there rounded to bf16, rows
// `ld_out` apart, instead of back to c: no float32 block written and read again.
template <int R, int C>
TF_INLINE void DotBlock(const bf16* a, int64_t a_ld, int64_t a_step, const bf16* b,
                        int64_t b_strip, float* c, int64_t ldc, int64_t nk, bool first,
                        bf16* out, int64_t ld_out) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < C; ++v)
      acc[r][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc + 16 * v);
  for (int64_t k = 0; k < nk; ++k) {
    const bf16* ak = a + k * a_step;
    const bf16* bk = b + k * kTile;
    for (int p = 0; p < 16; ++p) {
      __m512bh bv[C];
      for (int v = 0; v < C; ++v)
        bv[v] = (__m512bh)_mm512_loadu_si512(bk + v * b_strip + 32 * p);
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        std::memcpy(&pair, ak + r * a_ld + 2 * p, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        for (int v = 0; v < C; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, bv[v]);
      }
    }
  }
  static_assert(C % 2 == 0, "a bf16 store takes the sums of two vectors");
  if (out) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < C; v += 2)
        _mm512_storeu_si512(out + r * ld_out + 16 * v,
                            (__m512i)_mm512_cvtne2ps_pbh(acc[r][v + 1], acc[r][v]));
    return;
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < C; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

// A C block on vdpbf16ps. A is read where it lies: packed tiles (A^T), bf16 rows in place
// (broadcasts of R rows do not suffer the 4 KB row stride AMX's tile loads do), or float32
// rows rounded into a small buffer per R rows and K pass, reused across the block's columns:
// no packing pass over all of A before the products (that pass cost a quarter of the dx and
// down-projection matmuls' time at K = 1024-2048).
template <int R, class TA, class TB>
void DotTask(const Job& j, int64_t task) {
  const int64_t bn = (j.N + j.nt - 1) / j.nt, kc = j.K / 32;
  const int64_t m0 = task / bn * j.mt, n0 = task % bn * j.nt;
  const int64_t m1 = std::min(j.M, m0 + j.mt), n1 = std::min(j.N, n0 + j.nt);
  const BlockSums sums(j, m0, m1, n0, n1);
  alignas(64) bf16 rows[R * kBlockK];
  bf16* panel = j.b_in_task ? twofiles::ThreadScratch<bf16, 1>(kBlockK * j.nt) : nullptr;
  for (int64_t k0 = 0; k0 < kc; k0 += kBlockK / 32) {
    const int64_t nk = std::min(kc, k0 + kBlockK / 32) - k0;
    // B's strips for this block's columns and K pass: packed here, in L2, when no other
    // block needs them (j.b_in_task), else from the pack tasks' tiles.
    const bf16* b = j.bp + (n0 / 16) * kc * kTile + k0 * kTile;
    int64_t b_strip = kc * kTile;
    if (j.b_in_task) {
      const TB* src = static_cast<const TB*>(j.b) + 32 * k0 * j.N + n0;
      for (int64_t k = 0; k < nk; ++k)
        for (int64_t st = 0; st < (n1 - n0) / 16; ++st)
          PairsTile(src + 32 * k * j.N + 16 * st, j.N, false, panel + (st * nk + k) * kTile);
      b = panel, b_strip = nk * kTile;
    }
    for (int64_t m = m0; m < m1; m += R) {
      const bf16* a;
      int64_t a_ld = 32, a_step = kTile;
      if (j.pack_a) {
        a = j.ap + (m / 16) * kc * kTile + (m % 16) * 32 + k0 * kTile;
      } else if constexpr (std::is_same_v<TA, bf16>) {
        a = static_cast<const bf16*>(j.a) + m * j.K + 32 * k0, a_ld = j.K, a_step = 32;
      } else {
        const TA* src = static_cast<const TA*>(j.a) + m * j.K + 32 * k0;
        for (int r = 0; r < R; ++r)
          for (int64_t k = 0; k < 32 * nk; k += 32)
            _mm512_store_ps(reinterpret_cast<float*>(rows + r * kBlockK + k),
                            Load32(src + r * j.K + k));
        a = rows, a_ld = kBlockK, a_step = 32;
      }
      const auto block = [&](auto strips, int64_t n) {
        bf16* out = j.c_bf16 && k0 + nk == kc ? static_cast<bf16*>(j.c) + m * j.N + n : nullptr;
        DotBlock<R, decltype(strips)::value>(a, a_ld, a_step, b + (n - n0) / 16 * b_strip,
                                             b_strip, sums.At(m, n), sums.ld, nk, k0 == 0,
                                             out, j.N);
      };
      int64_t n = n0;
      for (; n + 64 <= n1; n += 64) block(std::integral_constant<int, 4>{}, n);
      if (n < n1) block(std::integral_constant<int, 2>{}, n);  // the last 32 columns
    }
  }
}

template <class TA, class TB>
void Work(Job& j) {
  j.pack.Run([&](int64_t s) { PackTask<TA, TB>(j, s); });
  j.pack.Wait();
  if (j.engine == twofiles::Engine::kAmx) {
    twofiles::LoadTileConfig();
    j.mul.Run([&](int64_t t) { ProductTask(j, t); });
    _tile_release();
  } else {
    j.mul.Run([&](int64_t t) { DotTask<4, TA, TB>(j, t); });
  }
}

#pragma GCC pop_options

// C's blocks (one product task each): at most 512 x 512, sides multiples of 32 and as equal as
// they can be, cut further (the longer side first) until there are at least two per thread and
// a multiple of the threads; else the last thread's extra block is the others' idle time (the
// MLP's dW, 384 x 1152, had run as 5 blocks on 2 threads).
void CutBlocks(Job& j, int64_t threads) {
  const auto side = [](int64_t n, int64_t parts) { return (n / 32 + parts - 1) / parts * 32; };
  int64_t bm = (j.M + kBlockMN - 1) / kBlockMN, bn = (j.N + kBlockMN - 1) / kBlockMN;
  if (j.engine == twofiles::Engine::kDot && !j.tb && bm == 1) {
    // One row of blocks, so that each task packs its own B (DotTask; the weight gradients):
    // a multiple of the threads, each as wide as a multiple of 64 columns where one fits (the
    // 4 x 64 register block; its 4 x 32 tail is load-bound), else of 32.
    const int64_t quads = j.N / 64;
    for (int64_t n = threads; n <= quads; n += threads)
      if (j.N % 64 == 0 && quads % n == 0 && j.N / n <= kBlockMN) {
        j.mt = j.M, j.nt = j.N / n;
        return;
      }
    bn = std::max(bn, 2 * threads);
    bn = std::min((bn + threads - 1) / threads * threads, j.N / 32);
    j.mt = j.M, j.nt = side(j.N, bn);
    return;
  }
  for (;;) {
    j.mt = side(j.M, bm), j.nt = side(j.N, bn);
    const int64_t n = ((j.M + j.mt - 1) / j.mt) * ((j.N + j.nt - 1) / j.nt);
    if ((n >= 2 * threads && n % threads == 0) || (j.mt == 32 && j.nt == 32)) return;
    if (j.mt >= j.nt && j.mt > 32)
      ++bm;
    else
      ++bn;
  }
}

ffi::Error GemmImpl(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::AnyBuffer b,
                    ffi::Result<ffi::AnyBuffer> c, int64_t trans_a, int64_t trans_b) {
  if (twofiles::Bf16Engine() == twofiles::Engine::kNone)
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                      "bf16_gemm: this CPU has neither AMX nor AVX512_BF16 (or TWOFILES_CPU_ISA="
                      "avx2); bf16_gemm.py sends such products to XLA");
  auto job = std::make_shared<Job>();
  Job& j = *job;
  j.engine = twofiles::Bf16Engine();
  const auto da = a.dimensions(), db = b.dimensions();
  const auto is_f32 = [](const ffi::AnyBuffer& x) { return x.element_type() == ffi::F32; };
  const auto is_bf16 = [](const ffi::AnyBuffer& x) { return x.element_type() == ffi::BF16; };
  if (da.size() != 2 || db.size() != 2 || !(is_f32(a) || is_bf16(a)) || !(is_f32(b) || is_bf16(b)))
    return ffi::Error::InvalidArgument("bf16_gemm: operands must be 2-D bf16 or float32");
  const bool a32 = is_f32(a), b32 = is_f32(b);
  j.ta = trans_a != 0, j.tb = trans_b != 0;
  j.M = j.ta ? da[1] : da[0];
  j.K = j.ta ? da[0] : da[1];
  j.N = j.tb ? db[0] : db[1];
  if ((j.tb ? db[1] : db[0]) != j.K || j.M % 32 || j.N % 32 || j.K % 32)
    return ffi::Error::InvalidArgument("bf16_gemm: operands must agree on K, and M, N and K "
                                       "must be multiples of 32");
  j.a = a.untyped_data();
  j.b = b.untyped_data();
  j.c = c->untyped_data();
  j.c_bf16 = c->element_type() == ffi::BF16;
  const auto dc = c->dimensions();
  if ((!j.c_bf16 && c->element_type() != ffi::F32) || dc.size() != 2 || dc[0] != j.M ||
      dc[1] != j.N)
    return ffi::Error::InvalidArgument("bf16_gemm: the result must be float32 or bf16 [M, N]");
  // A^T is always packed. A is read in place by the vdpbf16ps engine (DotTask), and by AMX
  // where it is bf16 and K * 2 bytes is not a multiple of 4 KB (the 16 rows of a tile would
  // all meet in one of L1's 64 sets).
  j.pack_a = j.ta || (j.engine == twofiles::Engine::kAmx && (a32 || (2 * j.K) % 4096 == 0));
  j.ap = twofiles::ThreadScratch<bf16>((j.M + j.N) * j.K);
  j.bp = j.ap + j.M * j.K;
  CutBlocks(j, std::min<int64_t>(pool.num_threads(), 16));
  // One row of blocks (the weight gradients' M = d_model): each block's B columns are its own,
  // packed by its task into L2 as the products go, not written out whole first and read back.
  j.b_in_task = j.engine == twofiles::Engine::kDot && !j.tb && j.mt == j.M;
  j.pack.n = SideA(j).tasks + SideB(j).tasks;
  j.mul.n = ((j.M + j.mt - 1) / j.mt) * ((j.N + j.nt - 1) / j.nt);
  void (*work)(Job&) = a32 ? (b32 ? Work<float, float> : Work<float, bf16>)
                           : (b32 ? Work<bf16, float> : Work<bf16, bf16>);
  twofiles::Spread(pool, job, j.mul.n, work);
  j.mul.Wait();
  return ffi::Error::Success();
}

}  // namespace

// The engine this process runs the kernel on, for bf16_gemm.py (through ctypes): 0 none (XLA's
// dots), 1 vdpbf16ps, 2 AMX tiles.
extern "C" int TwofilesBf16GemmEngine() { return static_cast<int>(twofiles::Bf16Engine()); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwofilesBf16Gemm, GemmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("trans_a")
                                  .Attr<int64_t>("trans_b"));
