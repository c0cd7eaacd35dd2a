#include "meshsync/knowledge.h"

#include <algorithm>
#include <cassert>

namespace meshsync {
namespace {

// Calls fn(start, a_segment, b_segment) for every maximal item range over
// which neither a's nor b's segment changes. Both lists start at ItemId::Min()
// and are ordered by start.
template <typename A, typename B, typename Fn>
void ForEachOverlap(const std::vector<A>& a, const std::vector<B>& b, Fn fn) {
  size_t a_idx = 0;
  size_t b_idx = 0;
  while (true) {
    fn(std::max(a[a_idx].start, b[b_idx].start), a[a_idx], b[b_idx]);
    bool a_more = a_idx + 1 < a.size();
    bool b_more = b_idx + 1 < b.size();
    if (!a_more && !b_more) return;
    if (a_more && (!b_more || a[a_idx + 1].start < b[b_idx + 1].start)) {
      ++a_idx;
    } else if (b_more && (!a_more || b[b_idx + 1].start < a[a_idx + 1].start)) {
      ++b_idx;
    } else {
      ++a_idx;
      ++b_idx;
    }
  }
}

// Marks items first..last as inside, everything else as outside.
struct MaskSegment {
  ItemId start;
  bool inside;
};
std::vector<MaskSegment> Mask(const ItemId& first, const ItemId& last) {
  std::vector<MaskSegment> mask;
  if (first > ItemId::Min()) mask.push_back({ItemId::Min(), false});
  mask.push_back({first, true});
  if (last < ItemId::Max()) mask.push_back({last.Next(), false});
  return mask;
}

bool UnitLess(const Knowledge::UnitException& a, const ItemId& item, ChangeUnitId unit) {
  return a.item < item || (a.item == item && a.unit < unit);
}

}  // namespace

ClockVector::ClockVector(std::initializer_list<Entry> entries) {
  for (const Entry& entry : entries) Raise(entry.replica, entry.tick);
}

Tick ClockVector::Get(ReplicaKey replica) const {
  for (const Entry& entry : entries_) {
    if (entry.replica == replica) return entry.tick;
    if (entry.replica > replica) break;
  }
  return 0;
}

void ClockVector::Raise(ReplicaKey replica, Tick tick) {
  if (tick == 0) return;
  auto it = std::lower_bound(entries_.begin(), entries_.end(), replica,
                             [](const Entry& e, ReplicaKey key) { return e.replica < key; });
  if (it != entries_.end() && it->replica == replica) {
    it->tick = std::max(it->tick, tick);
  } else {
    entries_.insert(it, Entry{replica, tick});
  }
}

bool ClockVector::Dominates(const ClockVector& other) const {
  auto mine = entries_.begin();
  for (const Entry& theirs : other.entries_) {
    while (mine != entries_.end() && mine->replica < theirs.replica) ++mine;
    if (mine == entries_.end() || mine->replica != theirs.replica || mine->tick < theirs.tick) {
      return false;
    }
  }
  return true;
}

ClockVector ClockVector::Max(const ClockVector& a, const ClockVector& b) {
  ClockVector out;
  out.entries_.reserve(a.entries_.size() + b.entries_.size());
  auto ia = a.entries_.begin();
  auto ib = b.entries_.begin();
  while (ia != a.entries_.end() || ib != b.entries_.end()) {
    if (ib == b.entries_.end() || (ia != a.entries_.end() && ia->replica < ib->replica)) {
      out.entries_.push_back(*ia++);
    } else if (ia == a.entries_.end() || ib->replica < ia->replica) {
      out.entries_.push_back(*ib++);
    } else {
      out.entries_.push_back(Entry{ia->replica, std::max(ia->tick, ib->tick)});
      ++ia;
      ++ib;
    }
  }
  return out;
}

ClockVector ClockVector::Min(const ClockVector& a, const ClockVector& b) {
  ClockVector out;
  auto ib = b.entries_.begin();
  for (const Entry& entry : a.entries_) {
    while (ib != b.entries_.end() && ib->replica < entry.replica) ++ib;
    if (ib != b.entries_.end() && ib->replica == entry.replica) {
      out.entries_.push_back(Entry{entry.replica, std::min(entry.tick, ib->tick)});
    }
  }
  return out;
}

std::string ClockVector::ToString() const {
  std::string out = "{";
  for (size_t idx = 0; idx < entries_.size(); ++idx) {
    if (idx > 0) out += ", ";
    out += "r" + std::to_string(entries_[idx].replica) + ":" + std::to_string(entries_[idx].tick);
  }
  return out + "}";
}

const ClockVector& Knowledge::VectorFor(const ItemId& item) const {
  // The last range starting at or before `item`, if it reaches `item`.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), item,
                             [](const ItemId& id, const Range& r) { return id < r.first; });
  if (it != ranges_.begin() && item <= std::prev(it)->last) return std::prev(it)->vector;
  return scope_;
}

const ClockVector& Knowledge::VectorFor(const ItemId& item, ChangeUnitId unit) const {
  if (!units_.empty()) {
    auto it =
        std::lower_bound(units_.begin(), units_.end(), std::make_pair(item, unit),
                         [](const UnitException& u, const std::pair<ItemId, ChangeUnitId>& k) {
                           return UnitLess(u, k.first, k.second);
                         });
    if (it != units_.end() && it->item == item && it->unit == unit) return it->vector;
  }
  return VectorFor(item);
}

std::vector<Knowledge::Segment> Knowledge::Segments() const {
  std::vector<Segment> segments;
  segments.reserve(2 * ranges_.size() + 1);
  ItemId cursor = ItemId::Min();
  for (const Range& range : ranges_) {
    if (range.first > cursor) segments.push_back({cursor, scope_});
    segments.push_back({range.first, range.vector});
    if (range.last == ItemId::Max()) return segments;
    cursor = range.last.Next();
  }
  segments.push_back({cursor, scope_});
  return segments;
}

Knowledge Knowledge::FromSegments(std::vector<Segment> segments, std::vector<UnitException> units) {
  // Merge neighbours with equal vectors, so ranges come out maximal.
  std::vector<Segment> merged;
  merged.reserve(segments.size());
  for (Segment& segment : segments) {
    if (!merged.empty() && merged.back().vector == segment.vector) continue;
    merged.push_back(std::move(segment));
  }

  Knowledge out;
  out.scope_ = merged.front().vector;
  for (size_t idx = 1; idx < merged.size(); ++idx) {
    out.scope_ = ClockVector::Min(out.scope_, merged[idx].vector);
  }
  for (size_t idx = 0; idx < merged.size(); ++idx) {
    if (merged[idx].vector == out.scope_) continue;
    ItemId last = idx + 1 < merged.size() ? merged[idx + 1].start.Prev() : ItemId::Max();
    out.ranges_.push_back(Range{merged[idx].start, last, std::move(merged[idx].vector)});
  }
  for (UnitException& unit : units) {
    if (unit.vector == out.VectorFor(unit.item)) continue;
    out.units_.push_back(std::move(unit));
  }
  return out;
}

Result<Knowledge> Knowledge::FromParts(ClockVector scope, std::vector<Range> ranges,
                                       std::vector<UnitException> units) {
  for (size_t idx = 0; idx < ranges.size(); ++idx) {
    if (ranges[idx].last < ranges[idx].first) {
      return InvalidArgumentError("knowledge range ends before it starts");
    }
    if (idx > 0 && !(ranges[idx - 1].last < ranges[idx].first)) {
      return InvalidArgumentError("knowledge ranges overlap or are out of order");
    }
  }
  for (size_t idx = 1; idx < units.size(); ++idx) {
    if (!UnitLess(units[idx - 1], units[idx].item, units[idx].unit)) {
      return InvalidArgumentError("knowledge unit exceptions are out of order or repeated");
    }
  }
  Knowledge raw;
  raw.scope_ = std::move(scope);
  raw.ranges_ = std::move(ranges);
  return FromSegments(raw.Segments(), std::move(units));
}

Knowledge Knowledge::MapVectors(const std::function<ClockVector(const ClockVector&)>& fn) const {
  std::vector<Segment> segments = Segments();
  for (Segment& segment : segments) segment.vector = fn(segment.vector);
  std::vector<UnitException> units = units_;
  for (UnitException& unit : units) unit.vector = fn(unit.vector);
  return FromSegments(std::move(segments), std::move(units));
}

bool Knowledge::Contains(const Knowledge& other) const {
  bool contains = true;
  ForEachOverlap(Segments(), other.Segments(),
                 [&contains](const ItemId&, const Segment& mine, const Segment& theirs) {
                   if (!mine.vector.Dominates(theirs.vector)) contains = false;
                 });
  if (!contains) return false;
  for (const UnitException& unit : units_) {
    if (!unit.vector.Dominates(other.VectorFor(unit.item, unit.unit))) return false;
  }
  for (const UnitException& unit : other.units_) {
    if (!VectorFor(unit.item, unit.unit).Dominates(unit.vector)) return false;
  }
  return true;
}

Knowledge Knowledge::Union(const Knowledge& a, const Knowledge& b) {
  if (a.IsPlainVector() && b.IsPlainVector()) {
    return Knowledge(ClockVector::Max(a.scope_, b.scope_));
  }
  std::vector<Segment> segments;
  ForEachOverlap(a.Segments(), b.Segments(),
                 [&segments](const ItemId& start, const Segment& sa, const Segment& sb) {
                   segments.push_back({start, ClockVector::Max(sa.vector, sb.vector)});
                 });
  std::vector<UnitException> units;
  units.reserve(a.units_.size() + b.units_.size());
  auto ia = a.units_.begin();
  auto ib = b.units_.begin();
  while (ia != a.units_.end() || ib != b.units_.end()) {
    const UnitException* key;
    if (ib == b.units_.end() || (ia != a.units_.end() && UnitLess(*ia, ib->item, ib->unit))) {
      key = &*ia++;
    } else if (ia == a.units_.end() || UnitLess(*ib, ia->item, ia->unit)) {
      key = &*ib++;
    } else {
      key = &*ia++;
      ++ib;
    }
    units.push_back(UnitException{
        key->item, key->unit,
        ClockVector::Max(a.VectorFor(key->item, key->unit), b.VectorFor(key->item, key->unit))});
  }
  return FromSegments(std::move(segments), std::move(units));
}

void Knowledge::RaiseEverywhere(const Version& v) {
  if (v.tick == 0) return;
  if (IsPlainVector()) {
    scope_.Raise(v.replica, v.tick);
    return;
  }
  *this = Union(*this, Knowledge(ClockVector{{v.replica, v.tick}}));
}

Knowledge Knowledge::ProjectOnto(const ItemId& first, const ItemId& last) const {
  std::vector<Segment> segments;
  ForEachOverlap(Segments(), Mask(first, last),
                 [&segments](const ItemId& start, const Segment& s, const MaskSegment& m) {
                   segments.push_back({start, m.inside ? s.vector : ClockVector()});
                 });
  std::vector<UnitException> units;
  for (const UnitException& unit : units_) {
    if (unit.item >= first && unit.item <= last) units.push_back(unit);
  }
  return FromSegments(std::move(segments), std::move(units));
}

Knowledge Knowledge::ProjectOnto(const ItemId& item, ChangeUnitId unit) const {
  std::vector<Segment> segments{{ItemId::Min(), ClockVector()}};
  return FromSegments(std::move(segments), {UnitException{item, unit, VectorFor(item, unit)}});
}

Knowledge Knowledge::Exclude(const ItemId& first, const ItemId& last) const {
  std::vector<Segment> segments;
  ForEachOverlap(Segments(), Mask(first, last),
                 [&segments](const ItemId& start, const Segment& s, const MaskSegment& m) {
                   segments.push_back({start, m.inside ? ClockVector() : s.vector});
                 });
  std::vector<UnitException> units;
  for (const UnitException& unit : units_) {
    if (unit.item < first || unit.item > last) units.push_back(unit);
  }
  return FromSegments(std::move(segments), std::move(units));
}

Knowledge Knowledge::Exclude(const ItemId& item, ChangeUnitId unit) const {
  std::vector<UnitException> units = units_;
  auto it = std::lower_bound(units.begin(), units.end(), std::make_pair(item, unit),
                             [](const UnitException& u, const std::pair<ItemId, ChangeUnitId>& k) {
                               return UnitLess(u, k.first, k.second);
                             });
  if (it != units.end() && it->item == item && it->unit == unit) {
    it->vector = ClockVector();
  } else {
    units.insert(it, UnitException{item, unit, ClockVector()});
  }
  return FromSegments(Segments(), std::move(units));
}

std::string Knowledge::ToString() const {
  std::string out = scope_.ToString();
  if (!ranges_.empty()) {
    out += " ranges[";
    for (size_t idx = 0; idx < ranges_.size(); ++idx) {
      if (idx > 0) out += ", ";
      const Range& r = ranges_[idx];
      out += r.first.ToHex() + ".." + r.last.ToHex() + ":" + r.vector.ToString();
    }
    out += "]";
  }
  if (!units_.empty()) {
    out += " units[";
    for (size_t idx = 0; idx < units_.size(); ++idx) {
      if (idx > 0) out += ", ";
      const UnitException& u = units_[idx];
      out += u.item.ToHex() + "/" + std::to_string(u.unit) + ":" + u.vector.ToString();
    }
    out += "]";
  }
  return out;
}

KeyTranslator KeyTranslator::Extending(const ReplicaKeyMap& from, ReplicaKeyMap& to) {
  KeyTranslator translator;
  translator.keys_.reserve(from.size());
  for (const ReplicaId& id : from.ids()) translator.keys_.push_back(to.KeyFor(id));
  return translator;
}

KeyTranslator KeyTranslator::Restricting(const ReplicaKeyMap& from, const ReplicaKeyMap& to) {
  KeyTranslator translator;
  translator.keys_.reserve(from.size());
  for (const ReplicaId& id : from.ids()) translator.keys_.push_back(to.Find(id));
  return translator;
}

Version KeyTranslator::Translate(const Version& v) const {
  std::optional<ReplicaKey> key = (*this)(v.replica);
  if (!key.has_value()) return Version{};
  return Version{*key, v.tick};
}

}  // namespace meshsync
