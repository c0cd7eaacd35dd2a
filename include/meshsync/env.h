// The seam between meshsync and the operating system's notion of time and
// randomness. Everything that reads a clock or draws random bits takes a
// Clock& or Random&, so tests substitute deterministic fakes (testing/) and
// can move time backwards on purpose.
//
// SystemClock() and SystemRandom() return process-wide objects owned by
// meshsync; they are safe to use from any thread. Other implementations state
// their own thread-safety.
#ifndef MESHSYNC_ENV_H_
#define MESHSYNC_ENV_H_

#include <cstdint>

#include "meshsync/ids.h"

namespace meshsync {

class Clock {
 public:
  Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;

  // Wall-clock time in milliseconds since the Unix epoch. May jump backwards.
  virtual uint64_t NowMillis() = 0;
};

class Random {
 public:
  Random() = default;
  Random(const Random&) = delete;
  Random& operator=(const Random&) = delete;
  virtual ~Random() = default;

  // 64 uniformly random bits.
  virtual uint64_t Next64() = 0;
};

Clock& SystemClock();
Random& SystemRandom();  // seeded from the OS; not for cryptographic keys

// A hybrid logical clock producing ticks: wall-clock milliseconds in the high
// 48 bits and a logical counter in the low 16. Ticks it returns strictly
// increase, even when the wall clock goes backwards, and stay close to real
// time, so "newer" tie-breaks between replicas mean roughly "later".
// Thread-compatible.
class HybridLogicalClock {
 public:
  static constexpr int kLogicalBits = 16;
  // A peer's tick further ahead of our wall clock than this is not adopted,
  // so one peer with a broken clock cannot drag every replica into the future.
  static constexpr uint64_t kMaxForwardDriftMillis = 24ull * 3600 * 1000;

  // `last` is the largest tick this replica ever issued (persisted).
  explicit HybridLogicalClock(Clock& clock, Tick last = 0) : clock_(clock), last_(last) {}

  // A tick greater than every tick issued or observed before.
  Tick Next();
  // Records a tick seen from a peer, so later local ticks sort after it.
  void Observe(Tick remote);
  Tick last() const { return last_; }

  static uint64_t MillisOf(Tick tick) { return tick >> kLogicalBits; }

 private:
  Clock& clock_;
  Tick last_;
};

// For a batch process that builds one large structure in memory (a feed
// of 100,000 items is 600 MB of small objects): runs the program again
// (execv of /proc/self/exe with `argv`) with glibc's malloc set to grow its
// heaps in large steps backed by transparent huge pages
// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), so that first touching the
// memory costs one page fault per 2 MiB instead of one per 4 KiB; on this
// project's virtual machines that was half the time of a feed merge. The
// tunables are read only at start, hence the exec. Returns (doing nothing)
// when they are already set, when the exec fails, under a sanitizer or
// another C library. Not for long-running processes: their resident size
// would grow.
void ReexecWithHugePageHeap(char** argv);

}  // namespace meshsync

#endif  // MESHSYNC_ENV_H_
