// Replica: binds a provider to its metadata store, records local changes
// with new versions, and forgets old tombstones.
#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "meshsync/sync.h"

namespace meshsync {
namespace {

constexpr size_t kRecorderFlushItems = 10'000;
constexpr size_t kScanChunk = 1'000;

// Collects what a provider reports into StoreBatches, committing every
// kRecorderFlushItems items and at the end. Each committed batch carries the
// replica's raised knowledge and tick, so a crash mid-detection keeps what
// was committed consistent; the rest is detected again next time.
class Recorder final : public ChangeRecorder {
 public:
  explicit Recorder(Replica& replica) : replica_(replica) {}

  Result<std::optional<ItemMetadata>> FindItem(const ItemId& id) override {
    auto it = pending_.find(id);
    if (it != pending_.end()) return std::optional<ItemMetadata>(items_[it->second]);
    if (last_found_ && *last_found_ == id) return last_item_;
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> stored, replica_.store().GetItem(id));
    Remember(id, stored);
    return stored;
  }

  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    auto pending = pending_keys_.find(key);
    if (pending != pending_keys_.end()) {
      return std::optional<ItemMetadata>(items_[pending_.at(pending->second)]);
    }
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> stored, replica_.store().FindByKey(key));
    // A stored item whose key this pass has already changed is no longer
    // found under the old key.
    if (stored.has_value() && pending_.count(stored->id) > 0) return std::optional<ItemMetadata>();
    if (stored.has_value()) Remember(stored->id, stored);
    return stored;
  }

  Status ForEachLiveItem(const std::function<Status(const ItemMetadata&)>& fn) override {
    MESHSYNC_RETURN_IF_ERROR(Flush());  // so the walk sees this pass's changes
    ItemId cursor = ItemId::Min();
    while (true) {
      std::vector<ItemMetadata> chunk;
      MESHSYNC_RETURN_IF_ERROR(
          replica_.store().ScanItems(cursor, ItemId::Max(), kScanChunk, chunk));
      for (const ItemMetadata& item : chunk) {
        if (!item.tombstone) MESHSYNC_RETURN_IF_ERROR(fn(item));
      }
      if (chunk.size() < kScanChunk || chunk.back().id == ItemId::Max()) return Status::Ok();
      cursor = chunk.back().id.Next();
    }
  }

  Result<ItemId> Record(LocalChange change) override {
    std::optional<ItemMetadata> existing;
    if (change.id.has_value()) {
      MESHSYNC_ASSIGN_OR_RETURN(existing, FindItem(*change.id));
    }
    if (existing.has_value() && !existing->tombstone && !change.deleted &&
        change.changed_units.empty()) {
      // Nothing changed but the provider's own state (a refreshed stat
      // cache): no new version.
      ItemMetadata item = std::move(*existing);
      item.key = std::move(change.key);
      item.provider_state = std::move(change.provider_state);
      return Keep(std::move(item));
    }
    Version version{0, replica_.hlc().Next()};
    issued_ = true;
    ItemMetadata item;
    if (!existing.has_value()) {
      if (change.deleted)
        return InvalidArgumentError("cannot delete an item the replica never had");
      item.id = change.id.has_value() ? *change.id
                                      : ItemId::Generate(replica_.clock(), replica_.random());
      item.created = version;
      item.units.reserve(change.changed_units.size());
      for (ChangeUnitId unit : change.changed_units) item.SetUnit(unit, version);
    } else {
      item = std::move(*existing);
      if (change.deleted) {
        if (item.tombstone) return InvalidArgumentError("item is already deleted");
        item.tombstone = true;
      } else {
        if (item.tombstone) {
          // Re-created locally under the same id: a new state, in which the
          // units it had before and has not now are removed.
          item.tombstone = false;
          item.created = version;
          for (UnitVersion& unit : item.units) unit.version = version;
        }
        for (ChangeUnitId unit : change.changed_units) item.SetUnit(unit, version);
      }
    }
    item.updated = version;
    item.key = std::move(change.key);
    item.provider_state = std::move(change.provider_state);
    return Keep(std::move(item));
  }

  Status Flush() {
    if (items_.empty()) return Status::Ok();
    StoreBatch batch;
    // In id order, as the store's pages are (a provider's scan mostly is).
    auto by_id = [](const ItemMetadata& a, const ItemMetadata& b) { return a.id < b.id; };
    if (!std::is_sorted(items_.begin(), items_.end(), by_id)) {
      std::sort(items_.begin(), items_.end(), by_id);
    }
    batch.upserts = std::move(items_);
    items_ = {};
    // Only new versions change what the replica knows: a pass that merely
    // refreshed stat caches leaves its knowledge (and its peers) alone.
    if (issued_) {
      Tick tick = replica_.hlc().last();
      Knowledge knowledge = replica_.state().knowledge;
      knowledge.RaiseEverywhere(Version{0, tick});
      batch.knowledge = std::move(knowledge);
      batch.tick = tick;
      issued_ = false;
    }
    pending_.clear();
    pending_keys_.clear();
    // Written while the provider goes on scanning; Detect waits for it.
    return replica_.store().CommitInBackground(batch);
  }

 private:
  // The store's answer for `id`, until the next change is recorded: a
  // provider looks an item up before recording its change, and Record
  // looks it up again.
  void Remember(const ItemId& id, const std::optional<ItemMetadata>& item) {
    last_found_ = id;
    last_item_ = item;
  }

  // Queues `item` for the next commit.
  Result<ItemId> Keep(ItemMetadata item) {
    last_found_.reset();
    ItemId id = item.id;
    auto [previous, added] = pending_.try_emplace(id, items_.size());
    if (!added) pending_keys_.erase(items_[previous->second].key);
    if (!item.key.empty()) pending_keys_[item.key] = id;
    if (added) {
      items_.push_back(std::move(item));
    } else {
      items_[previous->second] = std::move(item);
    }
    if (items_.size() >= kRecorderFlushItems) MESHSYNC_RETURN_IF_ERROR(Flush());
    return id;
  }

  Replica& replica_;
  // Items queued for the next commit, in the order first recorded (moved
  // into the batch whole, not one by one), and where each is.
  std::vector<ItemMetadata> items_;
  std::unordered_map<ItemId, size_t, Id128Hash> pending_;
  bool issued_ = false;               // a new version was recorded since the last flush
  std::optional<ItemId> last_found_;  // see Remember
  std::optional<ItemMetadata> last_item_;
  // Keys of pending_ items, looked up by string_view without a copy.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return std::hash<std::string_view>()(key); }
  };
  std::unordered_map<std::string, ItemId, KeyHash, std::equal_to<>> pending_keys_;
};

}  // namespace

Status ChangeRecorder::RecordDeletions(const std::function<bool(const ItemMetadata&)>& gone) {
  std::vector<ItemMetadata> deleted;  // collected first: recording changes the live set
  MESHSYNC_RETURN_IF_ERROR(ForEachLiveItem([&](const ItemMetadata& item) {
    if (gone(item)) deleted.push_back(item);
    return Status::Ok();
  }));
  for (const ItemMetadata& item : deleted) {
    LocalChange change;
    change.id = item.id;
    change.deleted = true;
    change.key = item.key;
    MESHSYNC_RETURN_IF_ERROR(Record(std::move(change)).status());
  }
  return Status::Ok();
}

Result<std::unique_ptr<Replica>> Replica::Open(MetadataStore& store, Provider& provider,
                                               Clock& clock, Random& random) {
  if (store.state().provider_name != provider.Name()) {
    return FailedPreconditionError("replica metadata belongs to provider '" +
                                   store.state().provider_name + "', not '" +
                                   std::string(provider.Name()) + "'");
  }
  return std::unique_ptr<Replica>(new Replica(store, provider, clock, random));
}

Status Replica::DetectChanges() {
  MESHSYNC_RETURN_IF_ERROR(Detect(nullptr));
  return FinishDetection();
}

Status Replica::DetectChangesIn(const ChangeScope& scope) {
  MESHSYNC_RETURN_IF_ERROR(Detect(&scope));
  return FinishDetection();
}

Status Replica::StartDetectChanges() { return Detect(nullptr); }

Status Replica::FinishDetection() {
  MESHSYNC_RETURN_IF_ERROR(store_.Flush());
  if (!unrecorded_) return Status::Ok();
  unrecorded_ = false;
  // Only now, with the changes durable, may the provider move on.
  return provider_.ChangesRecorded().WithContext("detecting changes");
}

Status Replica::Detect(const ChangeScope* scope) {
  MESHSYNC_RETURN_IF_ERROR(FinishDetection());  // one pass at a time
  Recorder recorder(*this);
  Status detected = scope != nullptr ? provider_.DetectChangesIn(recorder, *scope)
                                     : provider_.DetectChanges(recorder);
  // Keep what was found even if detection stopped part-way (durable once
  // the store is flushed). The provider hears that it is recorded only if
  // the pass completed, and only once that is durable (FinishDetection).
  Status flushed = recorder.Flush();
  if (!detected.ok()) {
    if (flushed.ok()) store_.Flush().IgnoreError();  // durable; the scan's failure is the news
    return detected.WithContext("detecting changes");
  }
  MESHSYNC_RETURN_IF_ERROR(flushed);
  unrecorded_ = true;
  return Status::Ok();
}

Result<size_t> Replica::ForgetTombstones(uint64_t cutoff_millis) {
  size_t forgotten_count = 0;
  ItemId cursor = ItemId::Min();
  while (true) {
    std::vector<ItemMetadata> chunk;
    MESHSYNC_RETURN_IF_ERROR(store_.ScanItems(cursor, ItemId::Max(), kScanChunk, chunk));
    StoreBatch batch;
    ClockVector forgotten = state().forgotten.scope();
    for (const ItemMetadata& item : chunk) {
      if (!item.tombstone || HybridLogicalClock::MillisOf(item.updated.tick) >= cutoff_millis) {
        continue;
      }
      batch.erasures.push_back(item.id);
      forgotten.Raise(item.updated.replica, item.updated.tick);
    }
    if (!batch.erasures.empty()) {
      // Forgotten knowledge is a plain vector: "every version up to here may
      // have been forgotten". An overestimate is safe; it only makes
      // recovery syncs more likely.
      batch.forgotten = Knowledge::Union(state().forgotten, Knowledge(forgotten));
      MESHSYNC_RETURN_IF_ERROR(store_.Commit(batch));
      forgotten_count += batch.erasures.size();
    }
    if (chunk.size() < kScanChunk || chunk.back().id == ItemId::Max()) return forgotten_count;
    cursor = chunk.back().id.Next();
  }
}

}  // namespace meshsync
