// RecordProvider: an in-memory record store and its provider, for tests and
// examples. Each item is a record of named string fields; each field is one
// change unit (ChangeUnitIdFromName(field)), so concurrent edits of different
// fields merge and edits of the same field conflict.
//
// The application side (Put, Erase, Get) edits records directly, like an
// application writing to its database; DetectChanges finds those edits by
// comparing each field with the hash saved in the item's provider_state.
//
// Test hooks: a filter (SetFilter), and a save-failure injector (FailSavesOf)
// to exercise per-item errors.
//
// Built against the public headers only. Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_MEMORY_RECORD_PROVIDER_H_
#define MESHSYNC_PROVIDERS_MEMORY_RECORD_PROVIDER_H_

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "meshsync/provider.h"

namespace meshsync {

using Record = std::map<std::string, std::string>;  // field name -> value

class RecordProvider final : public Provider {
 public:
  static constexpr std::string_view kName = "memory-records";

  RecordProvider() = default;

  // ---- Application side ----
  void Put(const ItemId& id, const std::string& field, std::string value) {
    records_[id][field] = std::move(value);
  }
  void Erase(const ItemId& id) { records_.erase(id); }
  void EraseField(const ItemId& id, const std::string& field);
  const Record* Get(const ItemId& id) const;
  const std::map<ItemId, Record>& records() const { return records_; }

  // Holds only records for which `accepts` is true (when they are created).
  void SetFilter(std::function<bool(const Record&)> accepts) { filter_ = std::move(accepts); }
  // SaveChange fails for these items (kUnavailable), as a locked file would.
  void FailSavesOf(std::set<ItemId> items) { failing_ = std::move(items); }

  // Merge policy: concatenates distinct values in a fixed order, so both
  // sides of a conflict compute the same merged value.
  Result<std::string> MergeUnit(const ItemId& item, ChangeUnitId unit, std::string_view local,
                                std::string_view remote) override;

  // ---- Provider ----
  std::string_view Name() const override { return kName; }
  Status DetectChanges(ChangeRecorder& recorder) override;
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override;
  Result<SaveResult> SaveChange(const SaveRequest& request) override;
  bool IsFiltered() const override { return static_cast<bool>(filter_); }
  bool Accepts(const ItemId& item, std::span<const UnitData> units) const override;

 private:
  std::map<ItemId, Record> records_;
  std::function<bool(const Record&)> filter_;
  std::set<ItemId> failing_;
};

}  // namespace meshsync

#endif  // MESHSYNC_PROVIDERS_MEMORY_RECORD_PROVIDER_H_
