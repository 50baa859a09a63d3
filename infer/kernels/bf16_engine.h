// Which engine runs the bf16 kernels' tile products in this process (flash_attention_bf16.cc,
// bf16_gemm.cc): AMX tiles where the CPU has them and Linux grants them, AVX512_BF16's
// vdpbf16ps in register blocks elsewhere (AMD Zen 4 / 5), none without either. Included by
// those kernels (infer/kernels/cpu_kernels.py hashes it with them).

#pragma once

#include <cpuid.h>

#include <cstdlib>
#include <string>

#include "amx.h"

namespace twofiles {

enum class Engine { kNone = 0, kDot = 1, kAmx = 2 };

// kAmx: AMX-TILE and AMX-BF16 with Linux's permission; kDot: AVX-512 F, BW and BF16 without
// usable AMX (or TWOFILES_CPU_ISA=avx512, so that the vdpbf16ps engine's tests run on an AMX
// CPU too); kNone otherwise or with TWOFILES_CPU_ISA=avx2. Baseline code: runs on every x86.
inline Engine Bf16Engine() {
  static const Engine engine = [] {
    const std::string isa = std::getenv("TWOFILES_CPU_ISA") ?: "";
    unsigned a, b, c, d;
    if (isa == "avx2" || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Engine::kNone;
    const bool avx512 = (b >> 16 & 1) && (b >> 30 & 1);  // AVX512F, AVX512BW
    if (!avx512 || !__builtin_cpu_supports("avx512bf16")) return Engine::kNone;
    return isa != "avx512" && AmxGranted() ? Engine::kAmx : Engine::kDot;
  }();
  return engine;
}

}  // namespace twofiles
