// The core clock as the core runs it now, for train/cpu_peak.py: under a hypervisor
// /proc/cpuinfo reports the nominal (TSC) clock, and a boosting core runs well above it (a
// 2-core Zen 5 guest: 2.60 GHz reported, while single matmuls ran 25-30% above the peak
// that clock implies).
//
// A chain of dependent integer adds retires one add per cycle on every x86 core since the
// Pentium Pro (latency 1), so adds / seconds is the clock. Each asm statement is opaque to the
// compiler, which therefore can neither fold the chain nor reorder it.

#include <chrono>
#include <cstdint>

extern "C" double twofiles_clock_ghz(int64_t rounds) {
  uint64_t x = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
#define TF_ADD8 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t" \
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
    asm volatile(TF_ADD8 TF_ADD8 TF_ADD8 TF_ADD8 TF_ADD8 TF_ADD8 TF_ADD8 TF_ADD8 : "+r"(x));
#undef TF_ADD8
  }
  const std::chrono::duration<double, std::nano> ns = std::chrono::steady_clock::now() - start;
  return x / ns.count();  // 64 adds a round; the loop's own counter runs alongside
}
