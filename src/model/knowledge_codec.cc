// Knowledge's canonical binary encoding, version 1:
//
//   u8      format version (1)
//   varint  replica count N, then N replica ids (16 bytes each, strictly
//           ascending); vectors below name replicas by index into this table
//   vector  scope
//   varint  range count, then per range: first id, last id, vector
//   varint  unit exception count, then per exception: item id, varint unit,
//           vector
// where a vector is a varint entry count, then per entry a varint replica
// index (strictly ascending) and a varint tick (non-zero).
//
// Decode accepts only what Encode produces for some knowledge: anything else,
// including a valid but non-canonical form, is rejected, so equal knowledge
// always has equal bytes.
#include <algorithm>

#include "meshsync/knowledge.h"
#include "src/util/coding.h"

namespace meshsync {
namespace {

constexpr uint8_t kFormatVersion = 1;

struct IndexedEntry {
  uint64_t index;
  Tick tick;
};

void PutVector(std::string& out, const ClockVector& vector,
               const std::vector<uint64_t>& index_of_key) {
  std::vector<IndexedEntry> entries;
  entries.reserve(vector.entries().size());
  for (const auto& entry : vector.entries()) {
    entries.push_back({index_of_key[entry.replica], entry.tick});
  }
  std::sort(entries.begin(), entries.end(),
            [](const IndexedEntry& a, const IndexedEntry& b) { return a.index < b.index; });
  coding::PutVarint(out, entries.size());
  for (const IndexedEntry& entry : entries) {
    coding::PutVarint(out, entry.index);
    coding::PutVarint(out, entry.tick);
  }
}

// Reads a vector whose keys are still table indices.
bool GetVector(coding::Reader& in, uint64_t replica_count, ClockVector& vector) {
  uint64_t count;
  if (!in.GetVarint(count) || count > replica_count) return false;
  uint64_t previous = 0;
  for (uint64_t entry_idx = 0; entry_idx < count; ++entry_idx) {
    uint64_t index;
    uint64_t tick;
    if (!in.GetVarint(index) || !in.GetVarint(tick)) return false;
    if (index >= replica_count || tick == 0) return false;
    if (entry_idx > 0 && index <= previous) return false;
    previous = index;
    vector.Raise(static_cast<ReplicaKey>(index), tick);
  }
  return true;
}

}  // namespace

std::string Knowledge::Encode(const ReplicaKeyMap& keys) const {
  // The replica table: every key in use, ordered by replica id.
  std::vector<ReplicaKey> used;
  auto note = [&used](const ClockVector& v) {
    for (const auto& entry : v.entries()) used.push_back(entry.replica);
  };
  note(scope_);
  for (const Range& range : ranges_) note(range.vector);
  for (const UnitException& unit : units_) note(unit.vector);
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());
  std::sort(used.begin(), used.end(),
            [&keys](ReplicaKey a, ReplicaKey b) { return keys.IdOf(a) < keys.IdOf(b); });
  std::vector<uint64_t> index_of_key(used.empty() ? 0 : used.back() + 1);
  for (ReplicaKey key : used) {
    if (key >= index_of_key.size()) index_of_key.resize(key + 1);
  }
  for (size_t idx = 0; idx < used.size(); ++idx) index_of_key[used[idx]] = idx;

  std::string out;
  out.push_back(static_cast<char>(kFormatVersion));
  coding::PutVarint(out, used.size());
  for (ReplicaKey key : used) coding::PutId(out, keys.IdOf(key));
  PutVector(out, scope_, index_of_key);
  coding::PutVarint(out, ranges_.size());
  for (const Range& range : ranges_) {
    coding::PutId(out, range.first);
    coding::PutId(out, range.last);
    PutVector(out, range.vector, index_of_key);
  }
  coding::PutVarint(out, units_.size());
  for (const UnitException& unit : units_) {
    coding::PutId(out, unit.item);
    coding::PutVarint(out, unit.unit);
    PutVector(out, unit.vector, index_of_key);
  }
  return out;
}

Result<Knowledge> Knowledge::Decode(std::string_view bytes, ReplicaKeyMap& keys) {
  auto malformed = [](const char* what) {
    return InvalidArgumentError(std::string("malformed knowledge: ") + what);
  };
  coding::Reader in(bytes);
  uint8_t format;
  if (!in.GetByte(format)) return malformed("empty input");
  if (format != kFormatVersion) {
    return InvalidArgumentError("knowledge format version " + std::to_string(format) +
                                " is not supported (this build reads version 1)");
  }
  uint64_t replica_count;
  // Each replica id takes 16 bytes: bound counts by the bytes left before
  // reserving anything, so hostile counts cannot exhaust memory.
  if (!in.GetVarint(replica_count) || replica_count > in.remaining() / 16) {
    return malformed("bad replica count");
  }
  std::vector<ReplicaId> replicas(replica_count);
  for (uint64_t idx = 0; idx < replica_count; ++idx) {
    if (!in.GetId(replicas[idx])) return malformed("truncated replica table");
    if (idx > 0 && !(replicas[idx - 1] < replicas[idx])) {
      return malformed("replica table not strictly ordered");
    }
  }
  ClockVector scope;
  if (!GetVector(in, replica_count, scope)) return malformed("bad scope vector");

  uint64_t range_count;
  if (!in.GetVarint(range_count) || range_count > in.remaining() / 33) {
    return malformed("bad range count");
  }
  std::vector<Range> ranges(range_count);
  for (Range& range : ranges) {
    if (!in.GetId(range.first) || !in.GetId(range.last) ||
        !GetVector(in, replica_count, range.vector)) {
      return malformed("bad range");
    }
  }
  uint64_t unit_count;
  if (!in.GetVarint(unit_count) || unit_count > in.remaining() / 18) {
    return malformed("bad unit exception count");
  }
  std::vector<UnitException> units(unit_count);
  for (UnitException& unit : units) {
    uint64_t unit_id;
    if (!in.GetId(unit.item) || !in.GetVarint(unit_id) || unit_id > UINT32_MAX ||
        !GetVector(in, replica_count, unit.vector)) {
      return malformed("bad unit exception");
    }
    unit.unit = static_cast<ChangeUnitId>(unit_id);
  }
  if (!in.done()) return malformed("trailing bytes");

  Knowledge parsed;
  parsed.scope_ = scope;
  parsed.ranges_ = ranges;
  parsed.units_ = units;
  MESHSYNC_ASSIGN_OR_RETURN(Knowledge canonical,
                            FromParts(std::move(scope), std::move(ranges), std::move(units)));
  if (!(canonical == parsed)) return malformed("not in canonical form");
  // Every replica in the table must be used, or the encoding is not canonical.
  std::vector<bool> used(replica_count, false);
  auto note = [&used](const ClockVector& v) {
    for (const auto& entry : v.entries()) used[entry.replica] = true;
  };
  note(canonical.scope_);
  for (const Range& range : canonical.ranges_) note(range.vector);
  for (const UnitException& unit : canonical.units_) note(unit.vector);
  if (std::find(used.begin(), used.end(), false) != used.end()) {
    return malformed("unused replica in table");
  }

  std::vector<ReplicaKey> key_of_index(replica_count);
  for (uint64_t idx = 0; idx < replica_count; ++idx) key_of_index[idx] = keys.KeyFor(replicas[idx]);
  return canonical.MapKeys([&key_of_index](ReplicaKey index) -> std::optional<ReplicaKey> {
    return key_of_index[index];
  });
}

}  // namespace meshsync
