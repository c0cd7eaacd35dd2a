#include <map>
#include <unordered_map>

#include "meshsync/metadata_store.h"

namespace meshsync {
namespace {

class MemoryStore final : public MetadataStore {
 public:
  MemoryStore(ReplicaId id, std::string provider_name) {
    state_.id = id;
    state_.provider_name = std::move(provider_name);
    state_.keys = ReplicaKeyMap(id);
  }

  const ReplicaState& state() const override { return state_; }

  Result<std::optional<ItemMetadata>> GetItem(const ItemId& id) override {
    auto it = items_.find(id);
    if (it == items_.end()) return std::optional<ItemMetadata>();
    return std::optional<ItemMetadata>(it->second);
  }

  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    auto it = by_key_.find(std::string(key));
    if (it == by_key_.end()) return std::optional<ItemMetadata>();
    return GetItem(it->second);
  }

  Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                   std::vector<ItemMetadata>& out) override {
    for (auto it = items_.lower_bound(first); it != items_.end() && it->first <= last && limit > 0;
         ++it, --limit) {
      out.push_back(it->second);
    }
    return Status::Ok();
  }

  Result<size_t> CountItems() override { return items_.size(); }

  Result<std::vector<ConflictRecord>> ListConflicts() override {
    std::vector<ConflictRecord> out;
    for (const auto& [id, record] : conflicts_) out.push_back(record);
    return out;
  }

  Status Commit(const StoreBatch& batch) override {
    // Nothing below can fail, so applying in place is atomic.
    for (const ItemId& id : batch.erasures) Erase(id);
    for (const ItemMetadata& item : batch.upserts) {
      Erase(item.id);
      if (!item.key.empty()) by_key_[item.key] = item.id;
      items_[item.id] = item;
    }
    if (batch.keys) state_.keys = *batch.keys;
    if (batch.tick) state_.tick = std::max(state_.tick, *batch.tick);
    if (batch.knowledge) state_.knowledge = *batch.knowledge;
    if (batch.forgotten) state_.forgotten = *batch.forgotten;
    for (uint64_t id : batch.resolved_conflicts) conflicts_.erase(id);
    for (const ConflictRecord& record : batch.new_conflicts) {
      ConflictRecord stored = record;
      stored.id = ++last_conflict_id_;
      conflicts_[stored.id] = std::move(stored);
    }
    return Status::Ok();
  }

 private:
  void Erase(const ItemId& id) {
    auto it = items_.find(id);
    if (it == items_.end()) return;
    auto key_it = by_key_.find(it->second.key);
    if (key_it != by_key_.end() && key_it->second == id) by_key_.erase(key_it);
    items_.erase(it);
  }

  ReplicaState state_;
  std::map<ItemId, ItemMetadata> items_;
  std::unordered_map<std::string, ItemId> by_key_;
  std::map<uint64_t, ConflictRecord> conflicts_;
  uint64_t last_conflict_id_ = 0;
};

}  // namespace

std::unique_ptr<MetadataStore> OpenMemoryStore(ReplicaId id, std::string provider_name) {
  return std::make_unique<MemoryStore>(id, std::move(provider_name));
}

}  // namespace meshsync
