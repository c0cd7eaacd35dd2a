#include "memory/record_provider.h"

#include <algorithm>

#include "meshsync/record.h"

namespace meshsync {
namespace {

// provider_state: EncodeFieldHashes of the hash of each field's "name\0value".

FieldHashes HashesOf(const Record& record) {
  FieldHashes hashes;
  for (const auto& [name, value] : record) {
    hashes[ChangeUnitIdFromName(name)] = FieldHashOf(name, value);
  }
  return hashes;
}

}  // namespace

void RecordProvider::EraseField(const ItemId& id, const std::string& field) {
  auto it = records_.find(id);
  if (it != records_.end()) it->second.erase(field);
}

const Record* RecordProvider::Get(const ItemId& id) const {
  auto it = records_.find(id);
  return it == records_.end() ? nullptr : &it->second;
}

Status RecordProvider::DetectChanges(ChangeRecorder& recorder) {
  for (const auto& [id, record] : records_) {
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> known, recorder.FindItem(id));
    FieldHashes now = HashesOf(record);
    LocalChange change;
    change.id = id;
    change.key = id.ToHex();
    change.provider_state = EncodeFieldHashes(now);
    bool live = known.has_value() && !known->tombstone;
    change.changed_units =
        ChangedUnits(live ? DecodeFieldHashes(known->provider_state) : FieldHashes(), now);
    if (live && change.changed_units.empty()) continue;
    MESHSYNC_RETURN_IF_ERROR(recorder.Record(std::move(change)).status());
  }
  return recorder.RecordDeletions(
      [&](const ItemMetadata& item) { return !records_.contains(item.id); });
}

Status RecordProvider::LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                                      std::vector<UnitData>& out) {
  const Record* record = Get(item.id);
  if (record == nullptr) return NotFoundError("record " + item.id.ToHex() + " is gone");
  for (const auto& [name, value] : *record) {
    ChangeUnitId unit = ChangeUnitIdFromName(name);
    if (std::find(units.begin(), units.end(), unit) != units.end()) {
      out.push_back(UnitData{unit, EncodeField(name, value)});
    }
  }
  return Status::Ok();
}

Result<SaveResult> RecordProvider::SaveChange(const SaveRequest& request) {
  if (failing_.count(request.id) > 0) {
    return UnavailableError("record " + request.id.ToHex() + " is locked");
  }
  // Decode everything before touching the record, so a bad unit changes nothing.
  std::vector<std::pair<std::string, std::string>> fields;
  for (const UnitData& unit : request.units) {
    std::string name, value;
    MESHSYNC_RETURN_IF_ERROR(DecodeField(unit.data, name, value));
    if (ChangeUnitIdFromName(name) != unit.unit) {
      return InvalidArgumentError("record field '" + name + "' does not match its change unit");
    }
    fields.emplace_back(std::move(name), std::move(value));
  }
  SaveResult result;
  result.key = request.id.ToHex();
  if (request.action == SaveAction::kDelete) {
    records_.erase(request.id);
    return result;
  }
  Record& record = records_[request.id];
  if (request.action == SaveAction::kCreate) record.clear();
  for (auto& [name, value] : fields) record[name] = std::move(value);
  std::erase_if(record, [&request](const auto& field) {
    ChangeUnitId unit = ChangeUnitIdFromName(field.first);
    return std::find(request.removed_units.begin(), request.removed_units.end(), unit) !=
           request.removed_units.end();
  });
  result.provider_state = EncodeFieldHashes(HashesOf(record));
  return result;
}

bool RecordProvider::Accepts(const ItemId&, std::span<const UnitData> units) const {
  if (!filter_) return true;
  Record record;
  for (const UnitData& unit : units) {
    std::string name, value;
    if (!DecodeField(unit.data, name, value).ok()) return false;
    record[name] = value;
  }
  return filter_(record);
}

Result<std::string> RecordProvider::MergeUnit(const ItemId&, ChangeUnitId, std::string_view local,
                                              std::string_view remote) {
  std::string name, local_value, remote_value, ignored;
  MESHSYNC_RETURN_IF_ERROR(DecodeField(local, name, local_value));
  MESHSYNC_RETURN_IF_ERROR(DecodeField(remote, ignored, remote_value));
  const std::string& low = std::min(local_value, remote_value);
  const std::string& high = std::max(local_value, remote_value);
  return EncodeField(name, low + "|" + high);
}

}  // namespace meshsync
