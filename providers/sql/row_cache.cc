#include "sql/row_cache.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>

namespace meshsync::sql {
namespace {

// A record: u32 length and bytes of the key, of the state, then u32 count of
// values and each value's u32 length and bytes.
constexpr size_t kLength = sizeof(uint32_t);

const char kErased = 0;
const char* Erased() { return &kErased; }

uint32_t LoadLength(const char* p) {
  uint32_t n;
  std::memcpy(&n, p, kLength);
  return n;
}

char* StoreField(char* p, std::string_view field) {
  uint32_t n = static_cast<uint32_t>(field.size());
  std::memcpy(p, &n, kLength);
  if (n > 0) std::memcpy(p + kLength, field.data(), n);
  return p + kLength + n;
}

// Reads the field at `p` and moves `p` past it.
std::string_view NextField(const char*& p) {
  uint32_t n = LoadLength(p);
  std::string_view field(p + kLength, n);
  p += kLength + n;
  return field;
}

std::string_view KeyOf(const char* record) { return NextField(record); }

uint64_t Hash(std::string_view key) { return std::hash<std::string_view>()(key); }

}  // namespace

bool RowCache::Put(std::string_view key, std::string_view state,
                   std::span<const std::string> values) {
  constexpr size_t kMaxField = std::numeric_limits<uint32_t>::max();
  size_t size = 3 * kLength + key.size() + state.size();
  bool fits = key.size() <= kMaxField && state.size() <= kMaxField && values.size() <= kMaxField;
  for (const std::string& v : values) {
    size += kLength + v.size();
    fits &= v.size() <= kMaxField;
  }
  if (!fits) return false;
  if (size > left_ && bytes() + std::max(size, kBlockBytes) > max_bytes_) return false;
  if ((used_ + 1) * 2 > slots_.size()) Grow();
  char* record = Allocate(size);
  char* p = StoreField(record, key);
  p = StoreField(p, state);
  uint32_t count = static_cast<uint32_t>(values.size());
  std::memcpy(p, &count, kLength);
  p += kLength;
  for (const std::string& v : values) p = StoreField(p, v);

  const uint64_t hash = Hash(key);
  Slot& slot = slots_[Find(key, hash)];
  if (slot.record == nullptr) ++used_;
  if (slot.record == nullptr || slot.record == Erased()) ++live_;
  slot = Slot{hash, record};  // a record it replaces stays in its block, unused
  return true;
}

bool RowCache::Get(std::string_view key, std::string_view state,
                   std::vector<std::string_view>& values) const {
  if (slots_.empty()) return false;
  const char* p = slots_[Find(key, Hash(key))].record;
  if (p == nullptr || p == Erased()) return false;
  NextField(p);
  if (NextField(p) != state) return false;
  uint32_t count = LoadLength(p);
  p += kLength;
  values.clear();
  values.reserve(count);
  for (uint32_t i = 0; i < count; ++i) values.emplace_back(NextField(p));
  return true;
}

void RowCache::Erase(std::string_view key) {
  if (slots_.empty()) return;
  Slot& slot = slots_[Find(key, Hash(key))];
  if (slot.record == nullptr || slot.record == Erased()) return;
  slot.record = Erased();
  --live_;
}

void RowCache::Clear() {
  blocks_.clear();
  block_bytes_ = 0;
  next_ = nullptr;
  left_ = 0;
  slots_.clear();
  used_ = 0;
  live_ = 0;
}

size_t RowCache::Find(std::string_view key, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  size_t erased = SIZE_MAX;  // the first erased slot passed, to reuse
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.record == nullptr) return erased != SIZE_MAX ? erased : i;
    if (slot.record == Erased()) {
      if (erased == SIZE_MAX) erased = i;
    } else if (slot.hash == hash && KeyOf(slot.record) == key) {
      return i;
    }
  }
}

void RowCache::Grow() {
  std::vector<Slot> old = std::move(slots_);
  // Twice the live entries, at least: erased ones are dropped here.
  size_t size = 64;
  while (size < (live_ + 1) * 4) size *= 2;
  slots_.assign(size, Slot{});
  used_ = live_;
  const size_t mask = size - 1;
  for (const Slot& slot : old) {
    if (slot.record == nullptr || slot.record == Erased()) continue;
    size_t i = slot.hash & mask;
    while (slots_[i].record != nullptr) i = (i + 1) & mask;
    slots_[i] = slot;
  }
}

char* RowCache::Allocate(size_t size) {
  if (size > left_) {
    size_t block = std::max(size, kBlockBytes);
    blocks_.push_back(std::make_unique_for_overwrite<char[]>(block));
    block_bytes_ += block;
    next_ = blocks_.back().get();
    left_ = block;
  }
  char* p = next_;
  next_ += size;
  left_ -= size;
  return p;
}

}  // namespace meshsync::sql
