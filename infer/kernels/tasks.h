// Work split into numbered tasks for the project's XLA FFI kernels on CPUs: the calling thread
// and XLA's intra-op threads claim tasks from an atomic counter. If a helper never starts (a
// busy pool), the caller runs every task itself, so nothing waits on a thread that is not
// working. Included by the kernels in this folder (infer/cpu_kernels.py hashes it with them).

#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace twofiles {

constexpr int64_t kMaxHelpers = 15;

// n tasks, numbered 0..n-1; set n before any thread runs them.
struct Tasks {
  int64_t n = 0;
  std::atomic<int64_t> next{0}, done{0};

  // Claims and runs tasks (fn(task)) until none are left.
  template <typename Fn>
  void Run(Fn&& fn) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      fn(t);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  // Waits until every task has finished (the ones other threads claimed too): spinning first,
  // then yielding the core, so that a helper the OS preempted (more runnable threads than
  // cores, as when XLA runs two kernels at once) gets it back instead of waiting out a slice.
  void Wait() const {
    for (int spins = 0; done.load(std::memory_order_acquire) < n; ++spins) {
      if (spins < 4096)
        _mm_pause();
      else
        std::this_thread::yield();
    }
  }
};

// Calls work(*job) on the calling thread and on up to `parallel - 1` of XLA's threads. Each
// helper holds the job alive: it may start after the caller has finished every task.
template <typename Job>
void Spread(xla::ffi::ThreadPool& pool, const std::shared_ptr<Job>& job, int64_t parallel,
            void (*work)(Job&)) {
  const int64_t helpers = std::min({pool.num_threads() - 1, parallel - 1, kMaxHelpers});
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job, work] { work(*job); });
  work(*job);
}

// The calling thread's scratch of n values of T, 64-byte aligned, grown to the largest call and
// kept: no allocation or page faults in the steady state. XLA may run two kernel calls at once,
// each on its own calling thread, each with its own scratch. A kernel that needs two buffers
// at once takes them from two slots.
template <typename T, int kSlot = 0>
T* ThreadScratch(size_t n) {
  thread_local std::unique_ptr<T, decltype(&std::free)> buf(nullptr, &std::free);
  thread_local size_t size = 0;
  if (n > size) {
    buf.reset(static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64)));
    size = n;
  }
  return buf.get();
}

}  // namespace twofiles
