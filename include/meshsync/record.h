// Records: items whose change units are named fields (a row's columns, a
// contact's properties, a feed item's elements). Every record provider
// encodes a field the same way, so any record store syncs with any other:
//
//   unit  ChangeUnitIdFromName(name)
//   data  name, a NUL byte, then the value
//
// The name travels with the value, so a replica can store a field it has
// never seen. Names hold no NUL byte; values are any bytes.
#ifndef MESHSYNC_RECORD_H_
#define MESHSYNC_RECORD_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshsync/ids.h"
#include "meshsync/status.h"

namespace meshsync {

std::string EncodeField(std::string_view name, std::string_view value);
// kInvalidArgument when `data` holds no NUL byte or the name is empty.
Status DecodeField(std::string_view data, std::string& name, std::string& value);
// The same, as views into `data`.
Status DecodeField(std::string_view data, std::string_view& name, std::string_view& value);

// A 64-bit FNV-1a hash, for providers' change detection (not for security).
uint64_t FieldHash(std::string_view bytes);
// FieldHash(EncodeField(name, value)), without building the field.
uint64_t FieldHashOf(std::string_view name, std::string_view value);

// A record provider's change-detection state: the hash of each field's
// encoded data, by unit. Encoded as sorted (unit, hash) pairs, 12 bytes each;
// decoding ignores a trailing partial pair.
//
// A map kept as a sorted vector: a record has a handful of fields, and a
// provider builds one of these per record it scans or writes.
class FieldHashes {
 public:
  using value_type = std::pair<ChangeUnitId, uint64_t>;
  using const_iterator = std::vector<value_type>::const_iterator;

  uint64_t& operator[](ChangeUnitId unit) {
    auto it = LowerBound(unit);
    if (it == entries_.end() || it->first != unit) it = entries_.insert(it, {unit, 0});
    return it->second;
  }
  const_iterator find(ChangeUnitId unit) const {
    auto it = LowerBound(unit);
    return it != entries_.end() && it->first == unit ? it : entries_.end();
  }
  bool contains(ChangeUnitId unit) const { return find(unit) != end(); }
  size_t count(ChangeUnitId unit) const { return contains(unit) ? 1 : 0; }
  const_iterator begin() const { return entries_.begin(); }
  const_iterator end() const { return entries_.end(); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  void clear() { entries_.clear(); }
  void reserve(size_t units) { entries_.reserve(units); }
  friend bool operator==(const FieldHashes&, const FieldHashes&) = default;

 private:
  std::vector<value_type>::iterator LowerBound(ChangeUnitId unit) {
    return std::lower_bound(entries_.begin(), entries_.end(), unit,
                            [](const value_type& e, ChangeUnitId u) { return e.first < u; });
  }
  const_iterator LowerBound(ChangeUnitId unit) const {
    return std::lower_bound(entries_.begin(), entries_.end(), unit,
                            [](const value_type& e, ChangeUnitId u) { return e.first < u; });
  }
  std::vector<value_type> entries_;
};
std::string EncodeFieldHashes(const FieldHashes& hashes);
FieldHashes DecodeFieldHashes(std::string_view state);
// The units whose data differs between two states, in unit order: changed,
// added (only in `now`) and removed (only in `before`).
std::vector<ChangeUnitId> ChangedUnits(const FieldHashes& before, const FieldHashes& now);

}  // namespace meshsync

#endif  // MESHSYNC_RECORD_H_
