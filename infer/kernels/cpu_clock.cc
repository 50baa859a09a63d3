// The core clock as the core runs it now, for train/cpu_peak.py: under a hypervisor
// /proc/cpuinfo reports the nominal (TSC) clock, and a boosting core runs well above it (a
// 2-core Zen 5 guest: 2.60 GHz reported, while single matmuls ran 25-30% above the peak
// that clock implies).
//
// A chain of dependent 64-bit integer multiplies: imul r64, r64 has a latency of 3 cycles on
// every x86 core from Intel's Nehalem and AMD's Zen 1 to Zen 5, so 3 x multiplies / seconds is
// the clock. A chain of `add $1, reg` (one cycle each) was used first; Intel's Golden Cove
// cores fold such immediate adds at rename, several a cycle, and a 2-core Xeon with AMX
// (family 6 model 167) "measured" 20.85 GHz. Each asm statement is opaque to the compiler,
// which therefore can neither fold the chain nor reorder it.

#include <chrono>
#include <cstdint>

extern "C" double twofiles_clock_ghz(int64_t rounds) {
  uint64_t x = 3, factor = 1;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
#define TF_MUL8 "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t" \
                "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
    asm volatile(TF_MUL8 TF_MUL8 TF_MUL8 TF_MUL8 TF_MUL8 TF_MUL8 TF_MUL8 TF_MUL8
                 : "+r"(x) : "r"(factor));
#undef TF_MUL8
  }
  const std::chrono::duration<double, std::nano> ns = std::chrono::steady_clock::now() - start;
  asm volatile("" : : "r"(x));
  return 3.0 * 64 * rounds / ns.count();  // 64 multiplies of 3 cycles a round
}
