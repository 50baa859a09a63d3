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
// so a step costs the tokens so far, not the preallocated cache; blocks of slots that are all
// padding are skipped. A token that sees no valid slot (a padding token) gets zeros.
//
// Why a kernel: XLA:CPU runs each small batched product of attention as its own library call;
// on SmolLM2 (30 layers, 3 kv heads x 3 queries) a decode step's attention took 3.7 ms at batch
// 1 and 26 ms at batch 8 for ~15 MB of cache, and a 512-token prefill's ~170 ms.
//
// Work is one task per (b, g, block of kQueryBlock tokens), claimed by the calling thread and
// XLA's intra-op threads (tasks.h). Fusing the
// softmax into the pass over slot blocks (below, at `Rows`) and skipping what the causal mask
// hides took a 512-token SmolLM2 prefill's attention from ~3.1-3.7 to ~2.2 ms per layer here.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "tasks.h"

namespace ffi = xla::ffi;

namespace {

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

// A task is (b, g, block of kQueryBlock tokens): its rows (tokens x R query heads) share every
// loaded block of k and v. It walks the slots in blocks of kSlotBlock with an online softmax
// (flash attention): a block's scores stay in L1 between the q.k pass and the weighted sum of
// v, and the running maximum rescales the partial sums as it grows.
constexpr int64_t kQueryBlock = 16;
constexpr int64_t kSlotBlock = 128;  // a multiple of 16
constexpr int64_t kRowTile = 6;      // query rows per register tile in both passes

// scores[r, 0..16) = q[r, :] . k[:, 0..16) for RB query rows (q rows strided by K; k is K rows
// strided by `ks`, already at the block's first slot; scores rows strided by kSlotBlock).
// 2*RB accumulators and two loads fit in the 16 registers.
template <int RB, typename C>
void ScoresTile(const float* q, int64_t K, const C* k, int64_t ks, float* scores) {
  __m256 acc[RB][2];
  for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t i = 0; i < K; ++i) {
    const __m256 k0 = Load8(k + i * ks), k1 = Load8(k + i * ks + 8);
    for (int r = 0; r < RB; ++r) {
      const __m256 qi = _mm256_broadcast_ss(q + r * K + i);
      acc[r][0] = _mm256_fmadd_ps(qi, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qi, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    _mm256_storeu_ps(scores + r * kSlotBlock, acc[r][0]);
    _mm256_storeu_ps(scores + r * kSlotBlock + 8, acc[r][1]);
  }
}

template <typename C>
void ScoresRows(const float* q, int64_t rows, int64_t K, const C* k, int64_t ks, float* scores) {
  int64_t r = 0;
  for (; r + kRowTile <= rows; r += kRowTile)
    ScoresTile<kRowTile, C>(q + r * K, K, k, ks, scores + r * kSlotBlock);
  const float* qr = q + r * K;
  float* out = scores + r * kSlotBlock;
  switch (rows - r) {
    case 5: ScoresTile<5, C>(qr, K, k, ks, out); break;
    case 4: ScoresTile<4, C>(qr, K, k, ks, out); break;
    case 3: ScoresTile<3, C>(qr, K, k, ks, out); break;
    case 2: ScoresTile<2, C>(qr, K, k, ks, out); break;
    case 1: ScoresTile<1, C>(qr, K, k, ks, out); break;
    default: break;
  }
}

// Where the rows of a task stand against a slot block: row r's own slot (the last it may see)
// is `lag` + r / R slots after the block's first.
struct Rows {
  int64_t count, R, lag;
  int64_t Last(int64_t r) const { return lag + r / R; }
  // The first row that sees slot `u` of the block (rows are ordered by token).
  int64_t FirstSeeing(int64_t u) const {
    return std::min(count, std::max<int64_t>(0, u - lag) * R);
  }
};

// Scores of the block's w slots (k at its first slot, rows strided by S) in 16-slot tiles, each
// for the rows that see some slot of it. A last partial tile is copied, zero-padded, to `tail`
// (slots past the block may be outside the cache or garbage; they are never read).
template <typename C>
void Scores(const float* q, const Rows& rows, int64_t K, const C* k, int64_t S, int64_t w,
            float* scores, float* tail) {
  int64_t u = 0;
  for (; u + 16 <= w; u += 16) {
    const int64_t r = rows.FirstSeeing(u);
    ScoresRows(q + r * K, rows.count - r, K, k + u, S, scores + r * kSlotBlock + u);
  }
  if (u == w) return;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t s = 0; s < 16; ++s) tail[i * 16 + s] = u + s < w ? Load1(k + i * S + u + s) : 0;
  const int64_t r = rows.FirstSeeing(u);
  ScoresRows<float>(q + r * K, rows.count - r, K, tail, 16, scores + r * kSlotBlock + u);
}

// One row of a block's scores (wp slots, a multiple of 16) to softmax weights under the running
// maximum m and sum l: masks the slots the row may not see (not ok, or after `last`), raises m
// if needed and returns the factor exp(m_old - m_new) that rescales the row's partial sums.
// Masked slots get weight exactly 0 (also while nothing visible has been seen: m at kMasked).
float OnlineSoftmaxRow(float* row, const int32_t* ok, bool all_ok, int64_t wp, int64_t last,
                       float& m, float& l) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i limit = _mm256_set1_epi32(static_cast<int32_t>(std::min<int64_t>(last, wp) + 1));
  const __m256 masked = _mm256_set1_ps(kMasked);
  __m256 mx = masked;
  if (all_ok && last >= wp - 1) {  // a block before the row's own slot, no padding: no mask
    for (int64_t s = 0; s < wp; s += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(row + s));
  } else {
    for (int64_t s = 0; s < wp; s += 8) {
      const __m256i idx = _mm256_add_epi32(iota, _mm256_set1_epi32(static_cast<int32_t>(s)));
      const __m256i vis = _mm256_and_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ok + s)),
          _mm256_cmpgt_epi32(limit, idx));
      const __m256 x =
          _mm256_blendv_ps(masked, _mm256_loadu_ps(row + s), _mm256_castsi256_ps(vis));
      _mm256_storeu_ps(row + s, x);
      mx = _mm256_max_ps(mx, x);
    }
  }
  mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
  mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4e));
  mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xb1));
  const float m_new = std::max(m, _mm256_cvtss_f32(mx));
  if (m_new == kMasked) {  // nothing visible yet: no weights
    std::fill_n(row, wp, 0.0f);
    return 1.0f;
  }
  const float alpha = m_new == m ? 1.0f : std::exp(m - m_new);
  const __m256 mv = _mm256_set1_ps(m_new);
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t s = 0; s < wp; s += 8) {  // masked slots: exp(-1e30 - m) underflows to 0
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(row + s), mv));
    _mm256_storeu_ps(row + s, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum8);
  float sum = 0;
  for (float x : lanes) sum += x;
  m = m_new;
  l = l * alpha + sum;
  return alpha;
}

// acc[r, k0..k0+8*NV) = alpha[r] acc[r, ...] + sum_{s<n} p[r, s] v[s, ...] for RB rows (p rows
// strided by kSlotBlock, acc rows by K, v rows by K): each loaded piece of v feeds RB rows.
template <int RB, int NV, typename C>
void ValuesTile(const float* p, const C* v, int64_t K, int64_t n, int64_t k0,
                const float* alpha, float* acc) {
  __m256 a[RB][NV];
  for (int r = 0; r < RB; ++r) {
    const __m256 f = _mm256_set1_ps(alpha[r]);
    for (int j = 0; j < NV; ++j)
      a[r][j] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * K + k0 + 8 * j), f);
  }
  for (int64_t s = 0; s < n; ++s) {
    __m256 vs[NV];
    for (int j = 0; j < NV; ++j) vs[j] = Load8(v + s * K + k0 + 8 * j);
    for (int r = 0; r < RB; ++r) {
      const __m256 ps = _mm256_broadcast_ss(p + r * kSlotBlock + s);
      for (int j = 0; j < NV; ++j) a[r][j] = _mm256_fmadd_ps(ps, vs[j], a[r][j]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(acc + r * K + k0 + 8 * j, a[r][j]);
}

// ValuesTile over all K columns: 16 at a time (32 for up to 3 rows: 12 accumulators either
// way), then 8, then one by one.
template <int RB, typename C>
void ValuesRows(const float* p, const C* v, int64_t K, int64_t n, const float* alpha,
                float* acc) {
  int64_t k0 = 0;
  if constexpr (RB <= 3)
    for (; k0 + 32 <= K; k0 += 32) ValuesTile<RB, 4, C>(p, v, K, n, k0, alpha, acc);
  for (; k0 + 16 <= K; k0 += 16) ValuesTile<RB, 2, C>(p, v, K, n, k0, alpha, acc);
  for (; k0 + 8 <= K; k0 += 8) ValuesTile<RB, 1, C>(p, v, K, n, k0, alpha, acc);
  for (; k0 < K; ++k0)
    for (int r = 0; r < RB; ++r) {
      float sum = acc[r * K + k0] * alpha[r];
      for (int64_t s = 0; s < n; ++s) sum += p[r * kSlotBlock + s] * Load1(v + s * K + k0);
      acc[r * K + k0] = sum;
    }
}

// The weighted values of one block for rows [r0, rows.count) in tiles of kRowTile rows, each
// over the slots up to its last row's own (the weights after a row's own slot are 0).
template <typename C>
void Values(const float* p, const Rows& rows, int64_t r0, const C* v, int64_t K, int64_t w,
            const float* alpha, float* acc) {
  for (int64_t r = r0; r < rows.count; r += kRowTile) {
    const int64_t rb = std::min(kRowTile, rows.count - r);
    const int64_t n = std::min(w, rows.Last(r + rb - 1) + 1);
    const float* pr = p + r * kSlotBlock;
    const float* ar = alpha + r;
    float* accr = acc + r * K;
    switch (rb) {
      case 6: ValuesRows<6, C>(pr, v, K, n, ar, accr); break;
      case 5: ValuesRows<5, C>(pr, v, K, n, ar, accr); break;
      case 4: ValuesRows<4, C>(pr, v, K, n, ar, accr); break;
      case 3: ValuesRows<3, C>(pr, v, K, n, ar, accr); break;
      case 2: ValuesRows<2, C>(pr, v, K, n, ar, accr); break;
      case 1: ValuesRows<1, C>(pr, v, K, n, ar, accr); break;
      default: break;
    }
  }
}

template <typename C>
struct Job {
  const float* q;
  const C *k, *v;
  const bool* valid;
  float* out;
  Shape d;
  int64_t start, blocks;  // blocks of kQueryBlock tokens per (b, g)
  twofiles::Tasks tasks;  // B * G * blocks
};

struct Scratch {
  std::vector<float> q, scores, acc, m, l, alpha, tail;
  std::vector<int32_t> ok;
  std::vector<float*> out;
};

// One (b, g, token block): its R query heads per token against the slots up to its last token.
// Tasks go from the last token block to the first: the most work first balances the threads.
template <typename C>
void Task(const Job<C>& j, int64_t task, Scratch& sc) {
  const Shape& d = j.d;
  const int64_t bg = task % (d.B * d.G), b = bg / d.G, g = bg % d.G;
  const int64_t t0 = (j.blocks - 1 - task / (d.B * d.G)) * kQueryBlock;
  const int64_t t1 = std::min(d.T, t0 + kQueryBlock), rows = (t1 - t0) * d.R, K = d.K;
  const int64_t n = std::clamp<int64_t>(j.start + t1, 0, d.S);
  sc.q.resize(rows * K);
  sc.scores.resize(rows * kSlotBlock);
  sc.acc.assign(rows * K, 0.0f);
  sc.m.assign(rows, kMasked);
  sc.l.assign(rows, 0.0f);
  sc.alpha.resize(rows);
  sc.tail.resize(K * 16);
  sc.ok.resize(kSlotBlock);
  sc.out.resize(rows);
  for (int64_t t = t0; t < t1; ++t) {  // q rows of one kv head are strided by token: gather
    const int64_t at = (((b * d.T + t) * d.G + g) * d.R) * K;
    std::copy_n(j.q + at, d.R * K, sc.q.data() + (t - t0) * d.R * K);
    for (int64_t r = 0; r < d.R; ++r) sc.out[(t - t0) * d.R + r] = j.out + at + r * K;
  }
  const C* k = j.k + bg * K * d.S;
  const C* v = j.v + bg * d.S * K;
  const bool* valid = j.valid + b * d.S;
  for (int64_t s0 = 0; s0 < n; s0 += kSlotBlock) {
    const int64_t w = std::min(kSlotBlock, n - s0), wp = (w + 15) / 16 * 16;
    bool any = false, all = true;
    for (int64_t s = 0; s < wp; ++s) {
      sc.ok[s] = s < w && valid[s0 + s] ? -1 : 0;
      any |= sc.ok[s] != 0;
      all &= sc.ok[s] != 0;
    }
    if (!any) continue;  // padding: nothing to see here
    const Rows rs{rows, d.R, j.start + t0 - s0};
    const int64_t r0 = rs.FirstSeeing(0);
    float* scores = sc.scores.data();
    Scores(sc.q.data(), rs, K, k + s0, d.S, w, scores, sc.tail.data());
    for (int64_t r = r0; r < rows; ++r)
      sc.alpha[r] = OnlineSoftmaxRow(scores + r * kSlotBlock, sc.ok.data(), all, wp, rs.Last(r),
                                     sc.m[r], sc.l[r]);
    Values(scores, rs, r0, v + s0 * K, K, w, sc.alpha.data(), sc.acc.data());
  }
  for (int64_t r = 0; r < rows; ++r) {  // a row that sees no slot at all gets zeros
    const float inv = sc.l[r] > 0 ? 1.0f / sc.l[r] : 0.0f;
    for (int64_t i = 0; i < K; ++i) sc.out[r][i] = sc.acc[r * K + i] * inv;
  }
}

template <typename C>
void Work(Job<C>& j) {
  Scratch scratch;
  j.tasks.Run([&](int64_t t) { Task(j, t, scratch); });
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
  // The cache may hold more rows than q (a decode step of the first B rows of a cache of
  // slots): rows are outermost, so the first B are a prefix of each buffer.
  if (kd[0] < d.B || kd[1] != d.G || kd[2] != d.K || vd[0] != kd[0] || vd[1] != d.G ||
      vd[2] != d.S || vd[3] != d.K || valid.dimensions()[0] != kd[0] ||
      valid.dimensions()[1] != d.S) {
    return ffi::Error::InvalidArgument(
        "attend_cache: expected q [B,T,G,R,K], k [N,G,K,S], v [N,G,S,K] and valid [N,S], "
        "N >= B");
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
  job->tasks.n = d.B * d.G * job->blocks;
  twofiles::Spread(pool, job, job->tasks.n, Work<C>);
  job->tasks.Wait();
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
