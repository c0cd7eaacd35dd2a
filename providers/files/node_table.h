// NodeTable: the file provider's entries by item id, at addresses that stay
// put until the entry is erased.
//
// A folder of 100,000 files loads its index at every scan. As a
// std::unordered_map it cost an allocation per entry and, per insertion
// and lookup, cache misses on a bucket, on the node found there and on the
// node after it (to learn where that one's bucket is): most of loading the
// index, which came before every walk. Here entries sit in blocks, in the
// order they came, and the lookup is an array of 8-byte slots (32 bits of
// the id's hash and the entry's number) probed linearly, so a lookup reads
// one slot and the entry it finds, and an insertion of a new id reads one
// slot.
//
// T has a member `ItemId id`, which the table sets and the caller must not
// change while the entry is in the table. Not thread-safe.
#ifndef MESHSYNC_PROVIDERS_FILES_NODE_TABLE_H_
#define MESHSYNC_PROVIDERS_FILES_NODE_TABLE_H_

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

#include "meshsync/ids.h"

namespace meshsync::files {

template <typename T>
class NodeTable {
 public:
  NodeTable() = default;
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;
  ~NodeTable() { Clear(); }

  T* Find(const ItemId& id) { return const_cast<T*>(std::as_const(*this).Find(id)); }
  const T* Find(const ItemId& id) const {
    if (slots_.empty()) return nullptr;
    uint64_t hash = Hash(id);
    for (size_t i = Home(hash);; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.entry == kEmpty) return nullptr;
      if (slot.tag == Tag(hash)) {
        const T* value = Entry(slot.entry);
        if (value->id == id) return value;
      }
    }
  }
  bool Contains(const ItemId& id) const { return Find(id) != nullptr; }
  // The entry of `id`, which the caller knows is there: a broken invariant
  // otherwise, and the process stops rather than read a wrong entry.
  T& At(const ItemId& id) {
    T* value = Find(id);
    if (value == nullptr) {
      std::fprintf(stderr, "NodeTable: item %s is not in the index\n", id.ToHex().c_str());
      std::abort();
    }
    return *value;
  }

  // Adds `value` under `id` unless `id` is there; returns the entry of
  // `id` and whether it is the one added.
  std::pair<T*, bool> Insert(const ItemId& id, T value) {
    if (T* there = Find(id); there != nullptr) return {there, false};
    if ((size_ + 1) * 2 > slots_.size()) Grow(size_ + 1);
    uint32_t entry;
    if (!free_.empty()) {
      entry = free_.back();
      free_.pop_back();
    } else {
      if (used_ == blocks_.size() * kBlock) blocks_.push_back(allocator_.allocate(kBlock));
      entry = static_cast<uint32_t>(used_++);
      live_.push_back(0);
    }
    T* slot_value = std::construct_at(Entry(entry), std::move(value));
    slot_value->id = id;
    live_[entry] = 1;
    Place(Hash(id), entry);
    ++size_;
    return {slot_value, true};
  }

  // Removes the entry of `id`, if there. Pointers to other entries stay
  // valid.
  void Erase(const ItemId& id) {
    if (slots_.empty()) return;
    uint64_t hash = Hash(id);
    size_t hole = Home(hash);
    while (true) {
      const Slot& slot = slots_[hole];
      if (slot.entry == kEmpty) return;
      if (slot.tag == Tag(hash) && Entry(slot.entry)->id == id) break;
      hole = (hole + 1) & mask_;
    }
    uint32_t entry = slots_[hole].entry;
    // Entries after the hole that could not sit at their home because of
    // it move back into it, until an empty slot ends the run.
    for (size_t i = (hole + 1) & mask_; slots_[i].entry != kEmpty; i = (i + 1) & mask_) {
      size_t home = Home(Hash(Entry(slots_[i].entry)->id));
      // Whether `home` lies cyclically in (hole, i]: then the entry stays.
      bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
      if (!stays) {
        slots_[hole] = slots_[i];
        hole = i;
      }
    }
    slots_[hole] = Slot{};
    std::destroy_at(Entry(entry));
    live_[entry] = 0;
    free_.push_back(entry);
    --size_;
  }

  // Room for `n` entries without growing the lookup array.
  void Reserve(size_t n) {
    if (n * 2 > slots_.size()) Grow(n);
  }

  void Clear() {
    for (size_t i = 0; i < used_; ++i) {
      if (live_[i] != 0) std::destroy_at(Entry(static_cast<uint32_t>(i)));
    }
    for (T* block : blocks_) allocator_.deallocate(block, kBlock);
    blocks_.clear();
    live_.clear();
    free_.clear();
    slots_.clear();
    used_ = 0;
    size_ = 0;
    mask_ = 0;
    shift_ = 64;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // Iteration visits every entry once, in no particular order. Erasing
  // the entry at hand is allowed; inserting while iterating is not.
  template <bool kConst>
  class Iterator {
   public:
    using Table = std::conditional_t<kConst, const NodeTable, NodeTable>;
    using Value = std::conditional_t<kConst, const T, T>;
    Iterator(Table* table, size_t i) : table_(table), i_(i) { Settle(); }
    Value& operator*() const { return *table_->Entry(static_cast<uint32_t>(i_)); }
    Value* operator->() const { return table_->Entry(static_cast<uint32_t>(i_)); }
    Iterator& operator++() {
      ++i_;
      Settle();
      return *this;
    }
    bool operator==(const Iterator& other) const { return i_ == other.i_; }

   private:
    void Settle() {
      while (i_ < table_->used_ && table_->live_[i_] == 0) ++i_;
    }
    Table* table_;
    size_t i_;
  };
  Iterator<false> begin() { return Iterator<false>(this, 0); }
  Iterator<false> end() { return Iterator<false>(this, used_); }
  Iterator<true> begin() const { return Iterator<true>(this, 0); }
  Iterator<true> end() const { return Iterator<true>(this, used_); }

 private:
  // 64 KiB blocks of 128-byte entries.
  static constexpr size_t kBlock = 512;
  static constexpr uint32_t kEmpty = UINT32_MAX;
  struct Slot {
    uint32_t tag = 0;
    uint32_t entry = kEmpty;
  };

  static uint64_t Hash(const ItemId& id) { return id.hi ^ (id.lo * 0x9E3779B97F4A7C15ull); }
  // The slot array is indexed by the top bits of a second mix, and a slot
  // keeps the low 32 bits of the hash: the two are independent.
  size_t Home(uint64_t hash) const {
    return static_cast<size_t>((hash * 0xD6E8FEB86659FD93ull) >> shift_);
  }
  static uint32_t Tag(uint64_t hash) { return static_cast<uint32_t>(hash); }

  T* Entry(uint32_t entry) const { return blocks_[entry / kBlock] + entry % kBlock; }

  void Place(uint64_t hash, uint32_t entry) {
    size_t i = Home(hash);
    while (slots_[i].entry != kEmpty) i = (i + 1) & mask_;
    slots_[i] = Slot{Tag(hash), entry};
  }

  void Grow(size_t n) {
    size_t capacity = std::bit_ceil(std::max<size_t>(16, n * 2));
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    shift_ = 64 - std::countr_zero(capacity);
    for (size_t i = 0; i < used_; ++i) {
      if (live_[i] == 0) continue;
      uint32_t entry = static_cast<uint32_t>(i);
      Place(Hash(Entry(entry)->id), entry);
    }
  }

  std::allocator<T> allocator_;
  std::vector<T*> blocks_;
  std::vector<uint8_t> live_;   // by entry number, up to used_
  std::vector<uint32_t> free_;  // numbers of erased entries, to reuse
  std::vector<Slot> slots_;
  size_t used_ = 0;  // entry numbers handed out
  size_t size_ = 0;
  size_t mask_ = 0;
  int shift_ = 64;
};

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_NODE_TABLE_H_
