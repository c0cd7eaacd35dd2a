// Knowledge: a compact summary of every version a replica has seen.
//
// Conceptually knowledge is a function from (item, change unit) to a clock
// vector; version (R, t) of that unit is known when 0 < t <= vector[R]. It is
// stored as
//   * a scope vector that holds for all items not otherwise mentioned,
//   * ordered, disjoint item-id ranges (a single item is a one-item range)
//     whose vector differs from the scope, and
//   * change-unit exceptions: (item, unit) pairs whose vector differs from
//     their item's.
// The representation is canonical: the scope is the pointwise minimum over all
// items, ranges are maximal, and nothing equal to what it overrides is kept.
// So after a complete sync knowledge folds back to a plain clock vector, of
// size O(replicas), and equal knowledge has equal encodings.
//
// Exceptions need not dominate the scope: learned knowledge after an
// interrupted batch, or a unit whose conflict was deferred, knows *less* there.
//
// Encoding is self-contained: it carries the ReplicaIds of the keys it uses,
// sorted, so the bytes do not depend on either side's key numbering. Decode
// validates everything and never crashes on untrusted bytes.
//
// Plain value type; thread-compatible.
#ifndef MESHSYNC_KNOWLEDGE_H_
#define MESHSYNC_KNOWLEDGE_H_

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/ids.h"
#include "meshsync/status.h"
#include "meshsync/version.h"

namespace meshsync {

// Replica key -> highest tick seen. Entries are sorted by key; none has tick 0.
class ClockVector {
 public:
  struct Entry {
    ReplicaKey replica;
    Tick tick;
    friend bool operator==(const Entry&, const Entry&) = default;
  };

  ClockVector() = default;
  ClockVector(std::initializer_list<Entry> entries);

  Tick Get(ReplicaKey replica) const;
  // Sets the entry to max(current, tick).
  void Raise(ReplicaKey replica, Tick tick);
  bool Contains(const Version& v) const { return v.tick != 0 && v.tick <= Get(v.replica); }
  // True when every entry of `other` is <= the same entry here.
  bool Dominates(const ClockVector& other) const;

  static ClockVector Max(const ClockVector& a, const ClockVector& b);
  static ClockVector Min(const ClockVector& a, const ClockVector& b);

  bool empty() const { return entries_.empty(); }
  const std::vector<Entry>& entries() const { return entries_; }
  friend bool operator==(const ClockVector&, const ClockVector&) = default;

  std::string ToString() const;  // "{r0:12, r3:40}"

 private:
  std::vector<Entry> entries_;
};

class Knowledge {
 public:
  struct Range {  // items first..last, inclusive
    ItemId first;
    ItemId last;
    ClockVector vector;
    friend bool operator==(const Range&, const Range&) = default;
  };
  struct UnitException {
    ItemId item;
    ChangeUnitId unit;
    ClockVector vector;
    friend bool operator==(const UnitException&, const UnitException&) = default;
  };

  // Knows nothing.
  Knowledge() = default;
  // Knows `vector` for every item and unit.
  explicit Knowledge(ClockVector vector) : scope_(std::move(vector)) {}

  const ClockVector& scope() const { return scope_; }
  const std::vector<Range>& ranges() const { return ranges_; }
  const std::vector<UnitException>& unit_exceptions() const { return units_; }
  bool IsPlainVector() const { return ranges_.empty() && units_.empty(); }
  bool IsEmpty() const { return IsPlainVector() && scope_.empty(); }

  // The vector that holds for `item` (ignoring unit exceptions).
  const ClockVector& VectorFor(const ItemId& item) const;
  // The vector that holds for one unit of `item`.
  const ClockVector& VectorFor(const ItemId& item, ChangeUnitId unit) const;

  // Is version `v` of `item` known? Item-level: used for creation and
  // deletion versions, which belong to the item rather than to one unit.
  bool Contains(const ItemId& item, const Version& v) const { return VectorFor(item).Contains(v); }
  bool Contains(const ItemId& item, ChangeUnitId unit, const Version& v) const {
    return VectorFor(item, unit).Contains(v);
  }
  // Is everything `other` knows also known here?
  bool Contains(const Knowledge& other) const;

  // Everything known by either.
  static Knowledge Union(const Knowledge& a, const Knowledge& b);
  void UnionWith(const Knowledge& other) { *this = Union(*this, other); }
  // Records that this replica knows version `v` everywhere (a replica always
  // knows all of its own changes, and a clock vector entry is a prefix).
  void RaiseEverywhere(const Version& v);

  // Restricted to items first..last (inclusive); knows nothing elsewhere.
  Knowledge ProjectOnto(const ItemId& first, const ItemId& last) const;
  Knowledge ProjectOnto(const ItemId& item) const { return ProjectOnto(item, item); }
  // Restricted to one unit of one item.
  Knowledge ProjectOnto(const ItemId& item, ChangeUnitId unit) const;
  // Everything except items first..last (which become unknown).
  Knowledge Exclude(const ItemId& first, const ItemId& last) const;
  Knowledge Exclude(const ItemId& item) const { return Exclude(item, item); }
  // Everything except one unit of one item.
  Knowledge Exclude(const ItemId& item, ChangeUnitId unit) const;

  // The same knowledge with keys renamed by `map`; entries whose key maps to
  // nothing are dropped (knowing less is always safe for a reader).
  template <typename KeyMapFn>
  Knowledge MapKeys(const KeyMapFn& map) const;

  // Readable form for logs and tests, e.g.
  // "{r0:5, r1:9} ranges[0000..00ff:{r0:5, r1:12}] units[00ab/3:{r0:5}]".
  std::string ToString() const;

  // Canonical binary form. Key k is written as keys.IdOf(k);
  // REQUIRES: every key used is in `keys`.
  std::string Encode(const ReplicaKeyMap& keys) const;
  // Parses Encode's output; replica ids are mapped to keys of `keys`, which
  // gains the ids it did not know. Malformed or non-canonical input gives
  // kInvalidArgument and leaves `keys` unchanged.
  static Result<Knowledge> Decode(std::string_view bytes, ReplicaKeyMap& keys);

  friend bool operator==(const Knowledge&, const Knowledge&) = default;

  // Builds knowledge from raw parts and brings it to canonical form (used by
  // the decoder and by tests). Ranges must be ordered and disjoint.
  static Result<Knowledge> FromParts(ClockVector scope, std::vector<Range> ranges,
                                     std::vector<UnitException> units);

 private:
  struct Segment {  // from `start` up to the next segment's start
    ItemId start;
    ClockVector vector;
  };
  std::vector<Segment> Segments() const;
  static Knowledge FromSegments(std::vector<Segment> segments, std::vector<UnitException> units);
  Knowledge MapVectors(const std::function<ClockVector(const ClockVector&)>& fn) const;

  ClockVector scope_;
  std::vector<Range> ranges_;         // ordered, disjoint, maximal
  std::vector<UnitException> units_;  // ordered by (item, unit)
};

template <typename KeyMapFn>
Knowledge Knowledge::MapKeys(const KeyMapFn& map) const {
  return MapVectors([&map](const ClockVector& v) {
    ClockVector out;
    for (const auto& entry : v.entries()) {
      std::optional<ReplicaKey> key = map(entry.replica);
      if (key.has_value()) out.Raise(*key, entry.tick);
    }
    return out;
  });
}

// Maps the keys of one replica's key map onto another's, by replica id.
class KeyTranslator {
 public:
  // Replicas `to` does not know are added to it.
  static KeyTranslator Extending(const ReplicaKeyMap& from, ReplicaKeyMap& to);
  // Replicas `to` does not know map to nothing.
  static KeyTranslator Restricting(const ReplicaKeyMap& from, const ReplicaKeyMap& to);

  std::optional<ReplicaKey> operator()(ReplicaKey key) const {
    if (key >= keys_.size() || !keys_[key].has_value()) return std::nullopt;
    return keys_[key];
  }
  // REQUIRES: an Extending translator, or a key known to both.
  Version Translate(const Version& v) const;
  Knowledge Translate(const Knowledge& k) const { return k.MapKeys(*this); }

 private:
  std::vector<std::optional<ReplicaKey>> keys_;
};

}  // namespace meshsync

#endif  // MESHSYNC_KNOWLEDGE_H_
