// FingerprintSet: a set of 64-bit fingerprints (hashes of ids and keys) in
// one array, open addressing with linear probing. A store keeps one to say
// "certainly not here" without a query: a lookup whose fingerprint is not in
// the set has no answer to find, and one whose fingerprint is (the thing
// itself, or another with the same hash) asks the database as before.
//
// The set only grows; it refuses to hold more than a given number of
// fingerprints, so that its memory stays bounded (16 bytes an entry, at most
// half the slots full).
#ifndef MESHSYNC_STORE_FINGERPRINT_SET_H_
#define MESHSYNC_STORE_FINGERPRINT_SET_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "meshsync/ids.h"

namespace meshsync::store {

class FingerprintSet {
 public:
  explicit FingerprintSet(size_t max_size) : max_size_(max_size) {}

  static uint64_t Of(const ItemId& id) { return Mix(id.hi ^ Mix(id.lo)); }
  static uint64_t Of(std::string_view key) {
    // Salted, so that a key and an id rarely share a fingerprint.
    return Mix(std::hash<std::string_view>()(key) ^ 0x6B657973ull);
  }

  // Adds `fingerprint`. False, with nothing added, if it is not held and
  // the set already holds max_size fingerprints.
  bool Add(uint64_t fingerprint) {
    if (size_ >= max_size_) return Contains(fingerprint);
    fingerprint = Stored(fingerprint);
    if ((size_ + 1) * 2 > slots_.size()) Grow();
    for (size_t i = fingerprint & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] == fingerprint) return true;
      if (slots_[i] == 0) {
        slots_[i] = fingerprint;
        ++size_;
        return true;
      }
    }
  }

  bool Contains(uint64_t fingerprint) const {
    if (size_ == 0) return false;
    fingerprint = Stored(fingerprint);
    for (size_t i = fingerprint & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] == fingerprint) return true;
      if (slots_[i] == 0) return false;
    }
  }

  size_t size() const { return size_; }

 private:
  static uint64_t Mix(uint64_t x) {  // the finalizer of MurmurHash3
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
  }
  // 0 marks an empty slot.
  static uint64_t Stored(uint64_t fingerprint) { return fingerprint == 0 ? 1 : fingerprint; }

  void Grow() {
    std::vector<uint64_t> old = std::move(slots_);
    slots_.assign(std::max<size_t>(1024, old.size() * 2), 0);
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (uint64_t fingerprint : old) {
      if (fingerprint != 0) Add(fingerprint);
    }
  }

  size_t max_size_;
  std::vector<uint64_t> slots_;  // a power of two of them, or none
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace meshsync::store

#endif  // MESHSYNC_STORE_FINGERPRINT_SET_H_
