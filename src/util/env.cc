#include "meshsync/env.h"

#include <chrono>
#include <mutex>
#include <random>

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

}  // namespace meshsync
