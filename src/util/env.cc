#include "meshsync/env.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(thread_sanitizer)
#define MESHSYNC_HAS_SANITIZER 1
#endif
#endif
#ifndef MESHSYNC_HAS_SANITIZER
#define MESHSYNC_HAS_SANITIZER 0
#endif

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>

namespace meshsync {
namespace {

class RealClock final : public Clock {
 public:
  uint64_t NowMillis() override {
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    using std::chrono::system_clock;
    auto since_epoch = system_clock::now().time_since_epoch();
    return static_cast<uint64_t>(duration_cast<milliseconds>(since_epoch).count());
  }
};

class RealRandom final : public Random {
 public:
  RealRandom() {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device()};
    engine_.seed(seed);
  }
  uint64_t Next64() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return engine_();
  }

 private:
  std::mutex mutex_;
  std::mt19937_64 engine_;  // guarded by mutex_
};

}  // namespace

Clock& SystemClock() {
  static RealClock clock;
  return clock;
}

Random& SystemRandom() {
  static RealRandom random;
  return random;
}

Tick HybridLogicalClock::Next() {
  Tick physical = clock_.NowMillis() << kLogicalBits;
  last_ = physical > last_ ? physical : last_ + 1;
  return last_;
}

void HybridLogicalClock::Observe(Tick remote) {
  uint64_t limit_millis = clock_.NowMillis() + kMaxForwardDriftMillis;
  if (MillisOf(remote) > limit_millis) return;
  if (remote > last_) last_ = remote;
}

void ReexecWithHugePageHeap(char** argv) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !MESHSYNC_HAS_SANITIZER
  const char* current = getenv("GLIBC_TUNABLES");
  if (current != nullptr && std::strstr(current, "glibc.malloc.hugetlb") != nullptr) return;
  std::string value = "glibc.malloc.hugetlb=1:glibc.malloc.top_pad=268435456";
  if (current != nullptr && *current != '\0') value = std::string(current) + ":" + value;
  if (setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only if it failed: go on as we are
#else
  (void)argv;
#endif
}

}  // namespace meshsync
