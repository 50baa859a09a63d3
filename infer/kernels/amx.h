// What the project's AMX kernels share (flash_attention_bf16.cc, bf16_gemm.cc): whether this
// process may use the tiles, the one tile configuration both use, and the 16 x 16 32-bit
// register transpose their packing is built on. Included by those kernels (infer/kernels/
// cpu_kernels.py hashes it with them).

#pragma once

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace twofiles {

// AMX-TILE and AMX-BF16 in CPUID leaf 7 and Linux's permission to use the tile data (Linux
// 5.16+, asked once per process).
inline bool AmxGranted() {
  static const bool granted = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 22 & 1) && (d >> 24 & 1))) return false;  // AMX-BF16, AMX-TILE
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,amx-tile,amx-bf16")

// AMX palette 1, all eight tiles 16 rows x 64 bytes: the kernels keep a 32 x 32 float block in
// tiles 0-3, two 16-row slices of A in 4-5 and two 16-column slices of B in 6-7.
inline void LoadTileConfig() {
  struct alignas(64) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } cfg = {};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  // GCC 12 may treat ldtilecfg as reading the first byte only and drop the other stores (a
  // test program at -O2 configured no rows and died of SIGILL at its first tilezero).
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// r[i][j] -> out[j][i] for 16 x 16 32-bit values in registers: pairs within 128-bit lanes,
// then quadruples, then the lanes (the scalar loops this replaced were the flash backward's
// largest cost, perf).
inline __attribute__((always_inline)) void Transpose16(const __m512 r[16], __m512 out[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + j], lane L: column 4L + j of rows 4i..4i+3
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 a = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 b = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 c = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 d = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    out[j] = _mm512_shuffle_f32x4(a, c, 0x88);
    out[j + 4] = _mm512_shuffle_f32x4(b, d, 0x88);
    out[j + 8] = _mm512_shuffle_f32x4(a, c, 0xDD);
    out[j + 12] = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
}

#pragma GCC pop_options

}  // namespace twofiles
