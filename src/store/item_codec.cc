#include "src/store/item_codec.h"

#include "src/util/coding.h"

namespace meshsync::store {
namespace {

constexpr uint8_t kTombstoneFlag = 1;
// Ticks are written as they are, not as gaps below the update tick: set when
// a creation or unit tick is above it (a version made by a replica whose
// clock was ahead, kept by a merge), which a gap cannot express.
constexpr uint8_t kAbsoluteTicksFlag = 2;

Status Corrupt(const char* what) {
  return DataLossError(std::string("corrupt item metadata: ") + what);
}

}  // namespace

std::string EncodeItemVersions(const ItemMetadata& item) {
  // Created and unit ticks rarely exceed the update tick: then each is
  // stored as its gap below it (small varints); otherwise as it is.
  bool absolute = item.created.tick > item.updated.tick;
  for (const UnitVersion& unit : item.units) absolute |= unit.version.tick > item.updated.tick;
  auto tick = [&](uint64_t t) { return absolute ? t : item.updated.tick - t; };
  std::string out;
  // The usual size (small varints); a larger item grows the string.
  out.reserve(16 + item.units.size() * 8 + 5 + item.provider_state.size());
  out.push_back(static_cast<char>((item.tombstone ? kTombstoneFlag : 0) |
                                  (absolute ? kAbsoluteTicksFlag : 0)));
  coding::PutVarint(out, item.updated.replica);
  coding::PutVarint(out, item.updated.tick);
  coding::PutVarint(out, item.created.replica);
  coding::PutVarint(out, tick(item.created.tick));
  coding::PutVarint(out, item.units.size());
  for (const UnitVersion& unit : item.units) {
    coding::PutVarint(out, unit.unit);
    coding::PutVarint(out, unit.version.replica);
    coding::PutVarint(out, tick(unit.version.tick));
  }
  if (!item.provider_state.empty()) coding::PutBytes(out, item.provider_state);
  return out;
}

Status DecodeItemVersions(std::string_view bytes, ItemMetadata& item) {
  coding::Reader in(bytes);
  uint8_t flags;
  uint64_t updated_replica, updated_tick, created_replica, created_gap, unit_count;
  if (!in.GetByte(flags) || flags > (kTombstoneFlag | kAbsoluteTicksFlag)) return Corrupt("flags");
  const bool absolute = flags & kAbsoluteTicksFlag;
  if (!in.GetVarint(updated_replica) || !in.GetVarint(updated_tick) ||
      !in.GetVarint(created_replica) || !in.GetVarint(created_gap) ||
      updated_replica > UINT32_MAX || created_replica > UINT32_MAX ||
      (!absolute && created_gap > updated_tick)) {
    return Corrupt("versions");
  }
  auto tick = [&](uint64_t stored) { return absolute ? stored : updated_tick - stored; };
  if (!in.GetVarint(unit_count) || unit_count > in.remaining() / 3) return Corrupt("unit count");
  item.tombstone = flags & kTombstoneFlag;
  item.updated = Version{static_cast<ReplicaKey>(updated_replica), updated_tick};
  item.created = Version{static_cast<ReplicaKey>(created_replica), tick(created_gap)};
  item.units.clear();
  item.units.reserve(unit_count);
  for (uint64_t idx = 0; idx < unit_count; ++idx) {
    uint64_t unit, replica, gap;
    if (!in.GetVarint(unit) || !in.GetVarint(replica) || !in.GetVarint(gap) || unit > UINT32_MAX ||
        replica > UINT32_MAX || (!absolute && gap > updated_tick)) {
      return Corrupt("unit");
    }
    item.units.push_back(UnitVersion{static_cast<ChangeUnitId>(unit),
                                     Version{static_cast<ReplicaKey>(replica), tick(gap)}});
  }
  item.provider_state.clear();
  if (!in.done()) {
    std::string_view state;
    if (!in.GetBytes(state) || !in.done()) return Corrupt("provider state");
    item.provider_state.assign(state);
  }
  return Status::Ok();
}

std::string EncodeConflict(const ConflictRecord& c) {
  std::string out;
  coding::PutId(out, c.item);
  coding::PutVarint(out, c.unit);
  out.push_back(static_cast<char>(c.kind));
  coding::PutVarint(out, c.winner.replica);
  coding::PutVarint(out, c.winner.tick);
  coding::PutVarint(out, c.loser.replica);
  coding::PutVarint(out, c.loser.tick);
  out.push_back(static_cast<char>((c.loser_is_delete ? 1 : 0) | (c.deferred ? 2 : 0)));
  coding::PutVarint(out, c.detected_millis);
  coding::PutBytes(out, c.loser_data);
  return out;
}

Status DecodeConflict(std::string_view bytes, ConflictRecord& c) {
  coding::Reader in(bytes);
  uint64_t unit, winner_replica, winner_tick, loser_replica, loser_tick;
  uint8_t kind, flags;
  std::string_view data;
  if (!in.GetId(c.item) || !in.GetVarint(unit) || !in.GetByte(kind) ||
      !in.GetVarint(winner_replica) || !in.GetVarint(winner_tick) || !in.GetVarint(loser_replica) ||
      !in.GetVarint(loser_tick) || !in.GetByte(flags) || !in.GetVarint(c.detected_millis) ||
      !in.GetBytes(data) || !in.done() || unit > UINT32_MAX || kind < 1 || kind > 3 || flags > 3 ||
      winner_replica > UINT32_MAX || loser_replica > UINT32_MAX) {
    return DataLossError("corrupt conflict record");
  }
  c.unit = static_cast<ChangeUnitId>(unit);
  c.kind = static_cast<ConflictKind>(kind);
  c.winner = Version{static_cast<ReplicaKey>(winner_replica), winner_tick};
  c.loser = Version{static_cast<ReplicaKey>(loser_replica), loser_tick};
  c.loser_is_delete = flags & 1;
  c.deferred = flags & 2;
  c.loser_data = std::string(data);
  return Status::Ok();
}

std::string EncodeKeyMap(const ReplicaKeyMap& keys) {
  std::string out;
  for (const ReplicaId& id : keys.ids()) coding::PutId(out, id);
  return out;
}

Result<ReplicaKeyMap> DecodeKeyMap(std::string_view bytes) {
  if (bytes.empty() || bytes.size() % 16 != 0) return DataLossError("corrupt replica key map");
  coding::Reader in(bytes);
  std::vector<ReplicaId> ids;
  while (!in.done()) {
    Id128 id;
    if (!in.GetId(id)) return DataLossError("corrupt replica key map");
    for (const ReplicaId& seen : ids) {
      if (seen == id) return DataLossError("replica key map repeats a replica");
    }
    ids.emplace_back(id);
  }
  return ReplicaKeyMap(std::move(ids));
}

}  // namespace meshsync::store
