// Deterministic stand-ins for the Env seam, for tests.
#ifndef MESHSYNC_TESTING_FAKES_H_
#define MESHSYNC_TESTING_FAKES_H_

#include <cstdint>

#include "meshsync/env.h"

namespace meshsync::testing {

// A clock that only moves when told to (and may be moved backwards).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(uint64_t now_millis = 1'700'000'000'000) : now_(now_millis) {}
  uint64_t NowMillis() override { return now_; }
  void Set(uint64_t now_millis) { now_ = now_millis; }
  void Advance(uint64_t millis) { now_ += millis; }

 private:
  uint64_t now_;
};

// splitmix64: seeded, reproducible.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  uint64_t Next64() override;

 private:
  uint64_t state_;
};

}  // namespace meshsync::testing

#endif  // MESHSYNC_TESTING_FAKES_H_
