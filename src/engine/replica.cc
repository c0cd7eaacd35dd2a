// Replica: binds a provider to its metadata store, records local changes
// with new versions, and forgets old tombstones.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "meshsync/sync.h"

namespace meshsync {
namespace {

constexpr size_t kRecorderFlushItems = 10'000;
constexpr size_t kScanChunk = 1'000;

constexpr uint32_t kNone = UINT32_MAX;

struct ById {
  static const ItemId& Of(const ItemMetadata& item) { return item.id; }
  static size_t Hash(const ItemId& id) { return Id128Hash()(id); }
};
struct ByKey {
  static std::string_view Of(const ItemMetadata& item) { return item.key; }
  static size_t Hash(std::string_view key) { return std::hash<std::string_view>()(key); }
};

// Positions in a vector of items, found by a field of the item (By::Of):
// open addressing, linear probing. An item recorded is one slot, not a node
// of a map and a copy of its key: a new replica's first detection records
// every row or file it finds.
template <typename By>
class PendingIndex {
 public:
  template <typename Field>
  uint32_t Find(const std::vector<ItemMetadata>& items, const Field& field) const {
    if (slots_.empty()) return kNone;
    const size_t mask = slots_.size() - 1;
    for (size_t s = By::Hash(field) & mask;; s = (s + 1) & mask) {
      uint32_t i = slots_[s];
      if (i == kEmpty) return kNone;
      if (i != kErased && By::Of(items[i]) == field) return i;
    }
  }
  // Points the field of items[i] at i, in place of any other item. An
  // insertion takes the first erased slot on its way.
  void Insert(const std::vector<ItemMetadata>& items, uint32_t i) {
    if ((used_ + 1) * 4 > slots_.size()) Rehash(items);
    const auto& field = By::Of(items[i]);
    const size_t mask = slots_.size() - 1;
    size_t free = SIZE_MAX;
    for (size_t s = By::Hash(field) & mask;; s = (s + 1) & mask) {
      uint32_t at = slots_[s];
      if (at == kEmpty) {
        if (free == SIZE_MAX) ++used_;
        slots_[free != SIZE_MAX ? free : s] = i;
        return;
      }
      if (at == kErased) {
        if (free == SIZE_MAX) free = s;
      } else if (By::Of(items[at]) == field) {
        slots_[s] = i;
        return;
      }
    }
  }
  template <typename Field>
  void Erase(const std::vector<ItemMetadata>& items, const Field& field) {
    if (slots_.empty()) return;
    const size_t mask = slots_.size() - 1;
    for (size_t s = By::Hash(field) & mask;; s = (s + 1) & mask) {
      uint32_t i = slots_[s];
      if (i == kEmpty) return;
      if (i != kErased && By::Of(items[i]) == field) {
        slots_[s] = kErased;  // still used: it ends no probe
        return;
      }
    }
  }
  // Empty, keeping its size for the next batch.
  void Clear() {
    std::fill(slots_.begin(), slots_.end(), kEmpty);
    used_ = 0;
  }

 private:
  // Without the erased slots, at eight slots an item at least (a power of
  // two): a quarter full again after as many insertions as there are items.
  void Rehash(const std::vector<ItemMetadata>& items) {
    std::vector<uint32_t> live;
    live.reserve(used_);
    for (uint32_t i : slots_) {
      if (i != kEmpty && i != kErased) live.push_back(i);
    }
    size_t size = 1024;
    while (size < (live.size() + 1) * 8) size *= 2;
    slots_.assign(size, kEmpty);
    used_ = 0;
    for (uint32_t i : live) Insert(items, i);
  }

  static constexpr uint32_t kEmpty = kNone;
  static constexpr uint32_t kErased = kNone - 1;
  std::vector<uint32_t> slots_;
  size_t used_ = 0;  // slots not empty: a quarter at most, so probes stay short
};

// Collects what a provider reports into StoreBatches, committing every
// kRecorderFlushItems items and at the end. Each committed batch carries the
// replica's raised knowledge and tick, so a crash mid-detection keeps what
// was committed consistent; the rest is detected again next time.
class Recorder final : public ChangeRecorder {
 public:
  explicit Recorder(Replica& replica) : replica_(replica) {}

  Result<std::optional<ItemMetadata>> FindItem(const ItemId& id) override {
    if (uint32_t i = by_id_.Find(items_, id); i != kNone)
      return std::optional<ItemMetadata>(items_[i]);
    if (last_found_ && *last_found_ == id) return last_item_;
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> stored, replica_.store().GetItem(id));
    Remember(id, stored);
    return stored;
  }

  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    if (uint32_t i = by_key_.Find(items_, key); i != kNone)
      return std::optional<ItemMetadata>(items_[i]);
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> stored, replica_.store().FindByKey(key));
    // A stored item whose key this pass has already changed is no longer
    // found under the old key.
    if (stored.has_value() && by_id_.Find(items_, stored->id) != kNone)
      return std::optional<ItemMetadata>();
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
    by_id_.Clear();
    by_key_.Clear();
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
    uint32_t at = by_id_.Find(items_, id);
    if (at != kNone) {
      by_key_.Erase(items_, items_[at].key);
      items_[at] = std::move(item);
    } else {
      at = static_cast<uint32_t>(items_.size());
      items_.push_back(std::move(item));
      by_id_.Insert(items_, at);
    }
    if (!items_[at].key.empty()) by_key_.Insert(items_, at);
    if (items_.size() >= kRecorderFlushItems) MESHSYNC_RETURN_IF_ERROR(Flush());
    return id;
  }

  Replica& replica_;
  // Items queued for the next commit, in the order first recorded (moved
  // into the batch whole, not one by one), and where each is.
  std::vector<ItemMetadata> items_;
  // Where each item of items_ is, by id and by key (at most one per key: the
  // last recorded).
  PendingIndex<ById> by_id_;
  PendingIndex<ByKey> by_key_;
  bool issued_ = false;               // a new version was recorded since the last flush
  std::optional<ItemId> last_found_;  // see Remember
  std::optional<ItemMetadata> last_item_;
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
