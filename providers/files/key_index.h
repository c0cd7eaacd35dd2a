// KeyIndex: a hash table from 64-bit keys to pointers, open addressing with
// linear probing, for the file provider's index of (parent, name) hashes.
//
// A folder of 100,000 files builds one at every scan and looks up every
// name it walks: std::unordered_map spent an allocation per entry and a
// cache miss per node on that. Here an entry is 16 bytes in one array.
// Keys are hashes already, so they are only mixed, not hashed again.
// Erasure shifts later entries back (no tombstones), so lookups stay short
// however many entries come and go.
#ifndef MESHSYNC_PROVIDERS_FILES_KEY_INDEX_H_
#define MESHSYNC_PROVIDERS_FILES_KEY_INDEX_H_

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace meshsync::files {

template <typename T>
class KeyIndex {
 public:
  // The value of `key`, or nullptr.
  T* Find(uint64_t key) const {
    if (size_ == 0) return nullptr;
    for (size_t i = Home(key);; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.value == nullptr) return nullptr;
      if (slot.key == key) return slot.value;
    }
  }

  // Adds `key` -> `value` (REQUIRES: value != nullptr). False, and nothing
  // changed, if `key` is there already.
  bool Insert(uint64_t key, T* value) {
    if ((size_ + 1) * 2 > slots_.size()) Grow(size_ + 1);
    for (size_t i = Home(key);; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.value == nullptr) {
        slot = Slot{key, value};
        ++size_;
        return true;
      }
      if (slot.key == key) return false;
    }
  }

  // Removes `key` if it is there.
  void Erase(uint64_t key) {
    if (size_ == 0) return;
    size_t hole = Home(key);
    while (true) {
      if (slots_[hole].value == nullptr) return;
      if (slots_[hole].key == key) break;
      hole = (hole + 1) & mask_;
    }
    // Entries after the hole that could not sit at their home because of
    // it move back into it, until an empty slot ends the run.
    for (size_t i = (hole + 1) & mask_; slots_[i].value != nullptr; i = (i + 1) & mask_) {
      size_t home = Home(slots_[i].key);
      // Whether `home` lies cyclically in (hole, i]: then the entry stays.
      bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
      if (!stays) {
        slots_[hole] = slots_[i];
        hole = i;
      }
    }
    slots_[hole] = Slot{};
    --size_;
  }

  // Room for `n` entries without growing.
  void Reserve(size_t n) {
    if (n * 2 > slots_.size()) Grow(n);
  }
  void Clear() {
    slots_.clear();
    mask_ = 0;
    shift_ = 64;
    size_ = 0;
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key = 0;
    T* value = nullptr;  // nullptr: empty
  };

  // The top bits of a multiplicative mix: the best mixed ones.
  size_t Home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }

  void Grow(size_t n) {
    size_t capacity = std::bit_ceil(std::max<size_t>(16, n * 2));
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    shift_ = 64 - std::countr_zero(capacity);
    size_ = 0;
    for (const Slot& slot : old) {
      if (slot.value != nullptr) Insert(slot.key, slot.value);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_KEY_INDEX_H_
