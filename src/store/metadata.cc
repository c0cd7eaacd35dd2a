#include <algorithm>

#include "meshsync/metadata_store.h"

namespace meshsync {

const Version* ItemMetadata::FindUnit(ChangeUnitId unit) const {
  for (const UnitVersion& entry : units) {
    if (entry.unit == unit) return &entry.version;
  }
  return nullptr;
}

void ItemMetadata::SetUnit(ChangeUnitId unit, const Version& version) {
  auto it =
      std::lower_bound(units.begin(), units.end(), unit,
                       [](const UnitVersion& u, ChangeUnitId wanted) { return u.unit < wanted; });
  if (it != units.end() && it->unit == unit) {
    it->version = version;
  } else {
    units.insert(it, UnitVersion{unit, version});
  }
}

Status MetadataStore::VisitItems(const ItemId& first, const ItemId& last,
                                 const std::function<bool(ItemMetadata&)>& visit) {
  constexpr size_t kChunk = 4096;
  ItemId cursor = first;
  std::vector<ItemMetadata> chunk;
  while (true) {
    chunk.clear();
    MESHSYNC_RETURN_IF_ERROR(ScanItems(cursor, last, kChunk, chunk));
    for (ItemMetadata& item : chunk) {
      if (!visit(item)) return Status::Ok();
    }
    if (chunk.size() < kChunk || chunk.back().id == last) return Status::Ok();
    cursor = chunk.back().id.Next();
  }
}

Status MetadataStore::ScanChanges(const ItemId& first, const Knowledge& known, size_t limit,
                                  std::vector<ItemMetadata>& out, ChangeScan& scan) {
  scan = ChangeScan{};
  const size_t wanted = out.size() + std::max<size_t>(limit, 1);
  bool stopped = false;
  MESHSYNC_RETURN_IF_ERROR(VisitItems(first, ItemId::Max(), [&](ItemMetadata& item) {
    ++scan.examined;
    scan.through = item.id;
    if (!KnowsAllOf(known, item)) out.push_back(std::move(item));
    stopped = out.size() == wanted;
    return !stopped;
  }));
  if (!stopped) scan.through = ItemId::Max();
  return Status::Ok();
}

bool KnowsAllOf(const Knowledge& known, const ItemMetadata& item) {
  if (item.tombstone) return known.Contains(item.id, item.updated);
  if (!known.Contains(item.id, item.created)) return false;
  for (const UnitVersion& unit : item.units) {
    if (!known.Contains(item.id, unit.unit, unit.version)) return false;
  }
  return true;
}

bool MayBeUndoneByPowerCut(const ReplicaState& state, const StoreBatch& batch) {
  if (!batch.new_conflicts.empty()) return false;
  auto issued = [&](const Version& version) {
    return version.replica == 0 && version.tick > state.tick;
  };
  for (const ItemMetadata& item : batch.upserts) {
    if (issued(item.created) || issued(item.updated)) return false;
    for (const UnitVersion& unit : item.units) {
      if (issued(unit.version)) return false;
    }
  }
  return true;
}

std::string_view ConflictKindName(ConflictKind kind) {
  switch (kind) {
    case ConflictKind::kUpdateUpdate:
      return "update-update";
    case ConflictKind::kUpdateDelete:
      return "update-delete";
    case ConflictKind::kDeleteUpdate:
      return "delete-update";
  }
  return "unknown";
}

}  // namespace meshsync
