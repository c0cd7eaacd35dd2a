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

bool KnowsAllOf(const Knowledge& known, const ItemMetadata& item) {
  if (item.tombstone) return known.Contains(item.id, item.updated);
  if (!known.Contains(item.id, item.created)) return false;
  for (const UnitVersion& unit : item.units) {
    if (!known.Contains(item.id, unit.unit, unit.version)) return false;
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
