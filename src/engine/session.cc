// The sync session: one algorithm for every pair of providers.
//
// Per direction (source -> destination):
//   1. Take the destination's knowledge, in the source's replica keys.
//   2. If it lacks the source's forgotten knowledge, the destination missed
//      deletions the source no longer remembers: run a recovery (full
//      enumeration), which also deletes destination items the source knew
//      and forgot.
//   3. Enumerate the source items the destination lacks, in id order, up to
//      batch_size at a time (MetadataStore::ScanChanges; every item in a
//      recovery). Each window, the id range examined, is one batch: those
//      changes, with the source's knowledge as made-with knowledge.
//   4. For each change, compare it with the destination's item: apply it,
//      detect a conflict (the destination's version is not in the made-with
//      knowledge) and resolve it by policy, or keep the destination's state.
//   5. Make the provider's data durable, then commit the items' metadata,
//      conflicts and learned knowledge (the source's knowledge projected on
//      the window, less anything skipped) in one transaction.
//
// Plain creations, updates and deletions are handed to the destination's
// provider together (Provider::SaveChanges), so that a provider can apply a
// batch in the order its store prefers; what the engine does with each
// result waits until then. Any other call that reads or writes the
// destination's store (a conflict, a deletion that beats an edit) first
// settles the saves handed over so far, so the provider sees its changes in
// the order the engine decided them.
//
// A provider whose commit is mostly a wait for the device (a database's
// fsyncs) may commit a window's data on a thread of its own
// (Provider::CommitsInBackground) while the next window is read and
// decided; the window's metadata, staged meanwhile, is released once that
// commit is done (FinishCommit), which happens before anything calls the
// provider or writes the destination's store again.
#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>

#include "meshsync/sync.h"

namespace meshsync {
namespace {

// The later of two versions by the deterministic winner rule.
Version Later(const Version& a, const Version& b, const ReplicaKeyMap& keys) {
  if (a.IsNull()) return b;
  if (b.IsNull()) return a;
  return VersionWins(a, keys.IdOf(a.replica), b, keys.IdOf(b.replica)) ? a : b;
}

// The version an item's state is named by: its creation or latest unit change.
Version LatestOf(const ItemMetadata& item, const ReplicaKeyMap& keys) {
  Version latest = item.created;
  for (const UnitVersion& unit : item.units) latest = Later(latest, unit.version, keys);
  return latest;
}

// A tombstone lists every unit version its deletion superseded: ours and
// the incoming deletion's, the later version of each unit.
std::vector<UnitVersion> MergedUnits(const std::vector<UnitVersion>& a,
                                     const std::vector<UnitVersion>& b, const ReplicaKeyMap& keys) {
  ItemMetadata merged;
  merged.units = a;
  for (const UnitVersion& unit : b) {
    const Version* mine = merged.FindUnit(unit.unit);
    merged.SetUnit(unit.unit, mine == nullptr ? unit.version : Later(*mine, unit.version, keys));
  }
  return merged.units;
}

// Does the destination (whose knowledge is `known`, in source keys) lack
// anything of `item`?
bool Lacks(const Knowledge& known, const ItemMetadata& item) { return !KnowsAllOf(known, item); }

class DirectionRun {
 public:
  DirectionRun(Replica& source, Replica& dest, const SyncOptions& options, bool a_to_b,
               DirectionReport& report)
      : source_(source), dest_(dest), options_(options), report_(report) {
    progress_.a_to_b = a_to_b;
  }

  ~DirectionRun() {
    // Run finishes every commit; this only keeps a thread from outliving it.
    if (committing_.joinable()) committing_.join();
  }

  // Returns false if the session was cancelled. Whatever it returns, the
  // destination's metadata is durable.
  Result<bool> Run() {
    Result<bool> finished = RunWindows();
    // The last window's data may still be being committed: a window that
    // was applied in full is committed even if the next one failed.
    Status committed = AnnounceCommitted();
    if (finished.ok() && !committed.ok()) return committed;
    return finished;
  }

 private:
  Result<bool> RunWindows() {
    const ReplicaState& src = source_.state();
    const ReplicaState& dst = dest_.state();
    dest_known_ = KeyTranslator::Restricting(dst.keys, src.keys).Translate(dst.knowledge);
    recovery_ = !dest_known_.Contains(src.forgotten);
    if (recovery_ && !options_.allow_recovery) {
      return FailedPreconditionError("destination " + dst.id.ShortName() +
                                     " has not seen deletions that source " + src.id.ShortName() +
                                     " has forgotten; a recovery sync is needed");
    }
    if (!recovery_ && dest_known_.Contains(src.knowledge)) return true;  // nothing to send
    report_.recovery = recovery_;

    dest_keys_ = dst.keys;
    dest_filtered_ = dest_.provider().IsFiltered();
    to_dest_ = KeyTranslator::Extending(src.keys, dest_keys_);
    made_with_ = to_dest_.Translate(src.knowledge);
    if (options_.on_progress) {  // a count costs a pass over the source's items
      MESHSYNC_ASSIGN_OR_RETURN(progress_.items_total, source_.store().CountItems());
    }

    size_t batch_size = std::max<size_t>(options_.batch_size, 1);
    ItemId first = ItemId::Min();
    while (true) {
      if (options_.should_cancel && options_.should_cancel()) return false;
      std::vector<ItemMetadata> window;
      ItemId last;
      size_t examined;
      // How many source items the window spans; unknown (SIZE_MAX) when an
      // index let the source pass over those the destination has.
      size_t spanned;
      if (recovery_) {
        // Every item: the destination deletes what the source does not have.
        MESHSYNC_RETURN_IF_ERROR(
            source_.store().ScanItems(first, ItemId::Max(), batch_size, window));
        bool end = window.size() < batch_size || window.back().id == ItemId::Max();
        last = end ? ItemId::Max() : window.back().id;
        examined = window.size();
        spanned = examined;
      } else {
        // Only what the destination lacks, however far apart.
        MetadataStore::ChangeScan scan;
        MESHSYNC_RETURN_IF_ERROR(
            source_.store().ScanChanges(first, dest_known_, batch_size, window, scan));
        last = scan.through;
        examined = scan.examined;
        spanned = scan.indexed ? SIZE_MAX : examined;
      }
      const bool last_window = last == ItemId::Max();
      MESHSYNC_RETURN_IF_ERROR(ApplyWindow(first, last, window, spanned));
      progress_.items_done += examined;
      if (last_window) progress_.items_done = std::max(progress_.items_done, progress_.items_total);
      progress_.bytes_done = report_.bytes;
      if (options_.on_progress) options_.on_progress(progress_);
      if (last_window) break;
      first = last.Next();
    }
    if (recovery_) {
      // Having caught up, the destination may forget what the source forgot.
      StoreBatch batch;
      batch.keys = dest_keys_;
      batch.forgotten =
          Knowledge::Union(dest_.state().forgotten, to_dest_.Translate(src.forgotten));
      MESHSYNC_RETURN_IF_ERROR(FinishCommit());
      MESHSYNC_RETURN_IF_ERROR(SourceDurable());
      MESHSYNC_RETURN_IF_ERROR(dest_.store().Commit(batch));
    }
    return true;
  }

  // Everything decided about one batch, committed together.
  struct Batch {
    StoreBatch store;
    Knowledge learned;
  };

  // A change handed to the destination's provider (Defer) whose result the
  // engine has yet to record: `done` runs once the provider saved it.
  struct PendingSave {
    SaveRequest request;
    std::function<void(SaveResult)> done;
  };
  // Saves handed over at most at once, and their units' bytes: a window's
  // worth, within bounded memory.
  static constexpr size_t kMaxPendingSaves = 100'000;
  static constexpr size_t kMaxPendingBytes = size_t{64} << 20;

  // The item is not applied: not learned, so the next session offers it
  // again.
  void Skip(const ItemId& id, Status status, Batch& batch) {
    batch.learned = batch.learned.Exclude(id);
    ++report_.skipped;
    report_.errors.push_back(ItemError{id, std::move(status)});
  }

  void Defer(SaveRequest request, std::function<void(SaveResult)> done) {
    for (const UnitData& unit : request.units) pending_bytes_ += unit.data.size();
    pending_.push_back(PendingSave{std::move(request), std::move(done)});
  }

  // Has the destination's provider apply the deferred saves, and records
  // each result; a save that failed skips its item.
  // Callers that go on to use the provider themselves rely on it being free
  // (FinishCommit) afterwards.
  Status Settle(Batch& batch) {
    MESHSYNC_RETURN_IF_ERROR(FinishCommit());
    if (pending_.empty()) return Status::Ok();
    std::vector<PendingSave> pending = std::move(pending_);
    pending_.clear();
    pending_bytes_ = 0;
    std::vector<SaveRequest> requests;
    requests.reserve(pending.size());
    for (PendingSave& save : pending) requests.push_back(std::move(save.request));
    std::vector<Result<SaveResult>> results;
    results.reserve(requests.size());
    dest_.provider().SaveChanges(requests, results);
    if (results.size() != requests.size()) {
      return InternalError("provider " + std::string(dest_.provider().Name()) + " returned " +
                           std::to_string(results.size()) + " results for " +
                           std::to_string(requests.size()) + " changes");
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      if (results[i].ok()) {
        pending[i].done(*std::move(results[i]));
      } else {
        Skip(requests[i].id, results[i].status(), batch);
      }
    }
    return Status::Ok();
  }

  // `window`: the source's items from `first` through `last` that the
  // destination may lack (all of them in a recovery), of `spanned` items
  // (SIZE_MAX if unknown).
  Status ApplyWindow(const ItemId& first, const ItemId& last,
                     const std::vector<ItemMetadata>& window, size_t spanned) {
    Batch batch;
    pending_.clear();  // a window that failed leaves nothing for this one
    pending_bytes_ = 0;
    bool source_filtered = source_.provider().IsFiltered();
    // A filtered source cannot vouch for items it does not hold, so the
    // destination learns only about the items it was actually sent.
    if (!source_filtered) batch.learned = made_with_.ProjectOnto(first, last);
    dest_knowledge_ = dest_.state().knowledge;

    std::vector<const ItemMetadata*> changes;
    for (const ItemMetadata& item : window) {
      if (recovery_ || Lacks(dest_known_, item)) changes.push_back(&item);
    }
    MESHSYNC_ASSIGN_OR_RETURN(auto local, LoadLocal(first, last, spanned, changes));
    for (const ItemMetadata* change : changes) {
      if (source_filtered) batch.learned.UnionWith(made_with_.ProjectOnto(change->id));
      auto it = local.find(change->id);
      Status status = ApplyChange(*change, it == local.end() ? nullptr : &it->second, batch);
      // The store failing ends the session; a provider failing skips the item.
      MESHSYNC_RETURN_IF_ERROR(store_failure_);
      if (!status.ok()) Skip(change->id, std::move(status), batch);
      if (pending_.size() >= kMaxPendingSaves || pending_bytes_ >= kMaxPendingBytes) {
        MESHSYNC_RETURN_IF_ERROR(Settle(batch));
      }
    }
    MESHSYNC_RETURN_IF_ERROR(Settle(batch));
    if (recovery_ && !source_filtered) {
      MESHSYNC_RETURN_IF_ERROR(DeleteForgottenItems(first, last, window, batch));
    }

    MESHSYNC_RETURN_IF_ERROR(AnnounceCommitted());
    MESHSYNC_RETURN_IF_ERROR(SourceDurable());
    batch.store.knowledge = Knowledge::Union(dest_knowledge_, batch.learned);
    if (dest_keys_.size() != dest_.state().keys.size()) batch.store.keys = dest_keys_;
    batch.store.tick = dest_.hlc().last();
    // The metadata is written while the provider makes the data durable,
    // and committed only after that; then it is finished while the next
    // window is read and applied. The provider hears of it
    // (AnnounceCommitted) before it commits that window's data, so a crash
    // leaves at most one window's data without its metadata, which the next
    // detection reports and step 4 recognises (src/README.md).
    MESHSYNC_RETURN_IF_ERROR(dest_.store().StageInBackground(batch.store));
    committing_data_ = true;
    // Mostly a wait for the device, which the next window's reading and
    // deciding overlaps (reading the destination's store too, which must
    // show the staged metadata); the provider is not called until
    // FinishCommit.
    if (dest_.provider().CommitsInBackground() && dest_.store().ShowsStaged()) {
      try {
        committing_ = std::thread([this] { data_committed_ = dest_.provider().CommitChanges(); });
        return Status::Ok();
      } catch (const std::system_error&) {
        // No thread to be had: committed here instead.
      }
    }
    data_committed_ = dest_.provider().CommitChanges();
    return FinishCommit();
  }

  // Once the provider has committed the last window's data, releases its
  // metadata (or abandons it if the data could not be committed). Anything
  // that calls the destination's provider or writes its store first calls
  // this.
  // A failure ends the session, even where it surfaces while an item is
  // applied (store_failure_).
  Status FinishCommit() {
    if (!committing_data_) return Status::Ok();
    committing_data_ = false;
    if (committing_.joinable()) committing_.join();
    if (!data_committed_.ok()) {
      dest_.store().AbandonStaged();
      store_failure_ = data_committed_;
      return store_failure_;
    }
    store_failure_ = dest_.store().ReleaseStaged();
    MESHSYNC_RETURN_IF_ERROR(store_failure_);
    unannounced_ = true;
    ++report_.batches;
    // The source's detection, durable since SourceDurable, may now be
    // announced to its provider: while the destination's metadata is written.
    store_failure_ = source_.FinishDetection();
    return store_failure_;
  }

  // The source's changes may still be being committed (Replica::
  // StartDetectChanges) while the session reads and applies them; they are
  // durable before the destination commits anything that names them: its
  // data, its metadata, a preserved conflict.
  Status SourceDurable() { return source_.store().Flush(); }

  // Waits for the destination's metadata to be durable, then tells its
  // provider that the data it last committed is accounted for.
  Status AnnounceCommitted() {
    MESHSYNC_RETURN_IF_ERROR(FinishCommit());
    MESHSYNC_RETURN_IF_ERROR(dest_.store().Flush());
    if (!unannounced_) return Status::Ok();
    unannounced_ = false;
    return dest_.provider().ChangesCommitted();
  }

  // The destination's metadata for `changes`. One range scan beats many
  // lookups when most of the window changed (an initial sync), unless the
  // destination holds far more items in the range than the source does (the
  // last window reaches ItemId::Max()), or the window's size is unknown (an
  // indexed scan: few of its items changed); the scan is bounded so that
  // memory stays proportional to the batch.
  Result<std::map<ItemId, ItemMetadata>> LoadLocal(
      const ItemId& first, const ItemId& last, size_t window_size,
      const std::vector<const ItemMetadata*>& changes) {
    std::map<ItemId, ItemMetadata> local;
    if (changes.size() * 4 > window_size) {
      size_t limit = 2 * window_size + 16;
      std::vector<ItemMetadata> scanned;
      MESHSYNC_RETURN_IF_ERROR(dest_.store().ScanItems(first, last, limit + 1, scanned));
      if (scanned.size() <= limit) {
        for (ItemMetadata& item : scanned) {
          ItemId id = item.id;
          local.emplace(id, std::move(item));
        }
        return local;
      }
    }
    for (const ItemMetadata* change : changes) {
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item,
                                dest_.store().GetItem(change->id));
      if (item.has_value()) local.emplace(change->id, std::move(*item));
    }
    return local;
  }

  // Recovery: destination items in the window that the source does not
  // have, although it has seen every version of them, were deleted at the
  // source and their tombstones forgotten. The destination deletes them too,
  // and keeps a tombstone like any deletion, so that an edit which beats
  // this deletion later still learns which units it superseded. The
  // deletion's own version is gone with the source's tombstone, so it is
  // re-issued as a local one, which knows all the source knew. The range is
  // read in chunks: the destination may hold many items the source lacks.
  Status DeleteForgottenItems(const ItemId& first, const ItemId& last,
                              const std::vector<ItemMetadata>& window, Batch& batch) {
    constexpr size_t kChunk = 1'000;
    std::set<ItemId> at_source;
    for (const ItemMetadata& item : window) at_source.insert(item.id);
    ItemId cursor = first;
    while (true) {
      std::vector<ItemMetadata> chunk;
      MESHSYNC_RETURN_IF_ERROR(dest_.store().ScanItems(cursor, last, kChunk, chunk));
      for (const ItemMetadata& item : chunk) {
        if (item.tombstone || at_source.count(item.id) > 0 || !KnowsAllOf(made_with_, item)) {
          continue;
        }
        SaveRequest request{SaveAction::kDelete, item.id, &item, {}, {}, {}};
        auto saved = dest_.provider().SaveChange(request);
        if (!saved.ok()) {
          batch.learned = batch.learned.Exclude(item.id);
          report_.errors.push_back(ItemError{item.id, saved.status()});
          continue;
        }
        ItemMetadata deleted = item;
        deleted.tombstone = true;
        deleted.updated = Version{0, dest_.hlc().Next()};
        RaiseLocal(deleted.updated);
        deleted.key = std::move(saved->key);
        deleted.provider_state = std::move(saved->provider_state);
        batch.store.upserts.push_back(std::move(deleted));
        ++report_.deleted;
      }
      if (chunk.size() < kChunk || chunk.back().id == last) return Status::Ok();
      cursor = chunk.back().id.Next();
    }
  }

  // The source item with its versions in destination keys, and without the
  // source's provider-owned fields.
  ItemMetadata Translate(const ItemMetadata& item) {
    ItemMetadata out;
    out.id = item.id;
    out.created = to_dest_.Translate(item.created);
    out.updated = to_dest_.Translate(item.updated);
    out.tombstone = item.tombstone;
    out.units.reserve(item.units.size());
    for (const UnitVersion& unit : item.units) {
      out.units.push_back(UnitVersion{unit.unit, to_dest_.Translate(unit.version)});
    }
    dest_.hlc().Observe(out.updated.tick);
    return out;
  }

  Status LoadSource(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                    std::vector<UnitData>& out) {
    MESHSYNC_RETURN_IF_ERROR(source_.provider().LoadChangeData(item, units, out));
    for (const UnitData& unit : out) report_.bytes += unit.data.size();
    return Status::Ok();
  }

  // Units asked for but not loaded were removed at their version.
  static void SplitRemovals(const std::vector<ChangeUnitId>& wanted, std::vector<UnitData> loaded,
                            SaveRequest& request) {
    for (ChangeUnitId unit : wanted) {
      bool present = std::any_of(loaded.begin(), loaded.end(),
                                 [unit](const UnitData& d) { return d.unit == unit; });
      if (!present) request.removed_units.push_back(unit);
    }
    request.units = std::move(loaded);
  }

  // The destination made a version of its own (a merge, a restamp, a
  // conflict copy): its knowledge covers it, and the report counts it, since
  // the source has yet to receive it.
  void RaiseLocal(const Version& version) {
    dest_knowledge_.RaiseEverywhere(version);
    ++report_.local_versions;
  }

  // Opens the bulk data of the source's item, for the destination to copy.
  DataOpener SourceData(const ItemMetadata& source_item) {
    return [this, &source_item](ChangeUnitId unit) {
      return source_.provider().OpenData(source_item, unit);
    };
  }

  // The provider stored its own value of `units` (say, a file under another
  // name): a local change, with a new version that the source will receive.
  void Restamp(const std::vector<ChangeUnitId>& units, ItemMetadata& item) {
    if (units.empty()) return;
    Version version{0, dest_.hlc().Next()};
    RaiseLocal(version);
    for (ChangeUnitId unit : units) item.SetUnit(unit, version);
    item.updated = LatestOf(item, dest_keys_);
  }

  // Keep-both: offers the losing value to the destination's provider, which
  // may keep it as an item of its own (a conflict copy). The copy's id comes
  // from the conflict, so replicas that resolve the same conflict make the
  // same item, and one that already has it (or deleted it) gets no other.
  Status KeepLosingValue(const ItemMetadata& source_item, const ItemMetadata& local,
                         const UnitVersion& unit, const Version& loser, bool local_loses,
                         std::string_view loser_data, std::string_view winner_data, Batch& batch) {
    LosingValue value;
    value.item = local.id;
    value.local = &local;
    value.unit = unit.unit;
    value.data = loser_data;
    value.winner_data = winner_data;
    value.local_loses = local_loses;
    value.loser_replica = dest_keys_.IdOf(loser.replica);
    value.loser_tick = loser.tick;
    if (local_loses) {
      value.open_data = [this, &local](ChangeUnitId id) {
        return dest_.provider().OpenData(local, id);
      };
    } else {
      value.open_data = SourceData(source_item);
    }
    ItemId copy_id = ConflictCopyId(local.id, value.loser_replica, loser.tick);
    auto existing = dest_.store().GetItem(copy_id);
    if (!existing.ok()) {
      store_failure_ = existing.status();
      return store_failure_;
    }
    if (existing->has_value()) return Status::Ok();
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<NewItem> made,
                              dest_.provider().KeepLosingValue(copy_id, value));
    if (!made.has_value()) return Status::Ok();
    ItemMetadata copy;
    copy.id = copy_id;
    copy.created = Version{0, dest_.hlc().Next()};
    copy.updated = copy.created;
    RaiseLocal(copy.created);
    for (ChangeUnitId id : made->units) copy.SetUnit(id, copy.created);
    copy.key = std::move(made->key);
    copy.provider_state = std::move(made->provider_state);
    batch.store.upserts.push_back(std::move(copy));
    ++report_.conflict_copies;
    return Status::Ok();
  }

  static std::vector<ChangeUnitId> UnitIds(const ItemMetadata& item) {
    std::vector<ChangeUnitId> ids;
    ids.reserve(item.units.size());
    for (const UnitVersion& unit : item.units) ids.push_back(unit.unit);
    return ids;
  }

  Status ApplyChange(const ItemMetadata& source_item, const ItemMetadata* local, Batch& batch) {
    ItemMetadata change = Translate(source_item);
    if (local == nullptr) {
      if (change.tombstone) {  // remember the deletion, to pass it on
        batch.store.upserts.push_back(change);
        return Status::Ok();
      }
      if (dest_knowledge_.Contains(change.id, change.created)) {
        // We knew this item and have forgotten it (its tombstone was cleaned
        // up): a concurrent edit brings it back, but we can no longer tell
        // which units our deletion superseded. So it comes back as a new
        // incarnation; replicas that still hold units it does not have drop
        // them when they receive it (see Update). Every unit whose version we
        // already knew may have been superseded by a value our deletion knew
        // and the source never saw (our knowledge still claims that value),
        // so each gets a new version of ours, as Supersede does when the
        // tombstone is still here: replicas holding the superseded value then
        // take the survivor's, instead of each side keeping what it had.
        Version restamp{0, dest_.hlc().Next()};
        RaiseLocal(restamp);
        change.created = restamp;
        for (UnitVersion& unit : change.units) {
          if (dest_knowledge_.Contains(change.id, unit.unit, unit.version)) unit.version = restamp;
        }
        change.updated = LatestOf(change, dest_keys_);
      }
      return Create(source_item, std::move(change), nullptr, batch);
    }
    if (local->tombstone) {
      if (change.tombstone) return MergeDeletions(change, *local, batch);
      if (made_with_.Contains(change.id, local->updated)) {
        // The source saw our deletion and still has the item: its state is
        // newer (it kept a concurrent edit), so the item comes back.
        return Resurrect(source_item, std::move(change), *local, batch);
      }
      bool has_new_edit = false;
      for (const UnitVersion& unit : change.units) {
        if (!dest_knowledge_.Contains(change.id, unit.unit, unit.version)) has_new_edit = true;
      }
      if (!has_new_edit) return Status::Ok();  // the source has yet to learn our deletion
      if (options_.policy == ConflictPolicy::kDestinationWins) {
        return KeepDeletion(source_item, change, *local, batch);
      }
      // An edit beats a concurrent delete.
      ++report_.conflicts;
      batch.store.new_conflicts.push_back(Conflict(change.id, 0, ConflictKind::kDeleteUpdate,
                                                   change.updated, local->updated,
                                                   /*loser_is_delete=*/true, {}));
      return Resurrect(source_item, std::move(change), *local, batch);
    }
    if (change.tombstone) {
      if (KnowsAllOf(made_with_, *local)) {
        ItemMetadata deleted = *local;
        deleted.tombstone = true;
        deleted.updated = change.updated;
        deleted.units = MergedUnits(local->units, change.units, dest_keys_);
        Defer(SaveRequest{SaveAction::kDelete, change.id, local, {}, {}, {}},
              [this, &batch, deleted = std::move(deleted)](SaveResult saved) mutable {
                deleted.key = std::move(saved.key);
                deleted.provider_state = std::move(saved.provider_state);
                batch.store.upserts.push_back(std::move(deleted));
                ++report_.deleted;
              });
        return Status::Ok();
      }
      if (options_.policy == ConflictPolicy::kSourceWins)
        return DeleteEdited(change, *local, batch);
      // A local edit the source had not seen: it beats the deletion. The
      // destination still learns the deletion, and its edit flows back.
      ++report_.conflicts;
      batch.store.new_conflicts.push_back(Conflict(change.id, 0, ConflictKind::kUpdateDelete,
                                                   local->updated, change.updated,
                                                   /*loser_is_delete=*/true, {}));
      ItemMetadata survivor = *local;
      Supersede(change.units, dest_knowledge_, survivor);
      if (!(survivor.units == local->units)) batch.store.upserts.push_back(std::move(survivor));
      return Status::Ok();
    }
    return Update(source_item, change, *local, batch);
  }

  // Both sides deleted the item. The tombstone's version names the deletion
  // that peers compare against their own state, so it must never be replaced
  // by one that knows less: a deletion that knew ours supersedes it; ours
  // stays if we already knew theirs; two concurrent deletions become a new
  // local deletion that knows both, so it reaches every replica that has
  // seen only one of them (one of which may have kept the item alive because
  // an edit beat the other deletion).
  Status MergeDeletions(const ItemMetadata& change, const ItemMetadata& local, Batch& batch) {
    if (dest_knowledge_.Contains(change.id, change.updated)) return Status::Ok();
    ItemMetadata merged = local;
    merged.units = MergedUnits(local.units, change.units, dest_keys_);
    if (made_with_.Contains(change.id, local.updated)) {
      merged.updated = change.updated;
    } else {
      merged.updated = Version{0, dest_.hlc().Next()};
      RaiseLocal(merged.updated);
    }
    batch.store.upserts.push_back(std::move(merged));
    return Status::Ok();
  }

  // Brings back an item deleted here, in the source's state. Units this
  // replica knew that the source has not seen are not in that state: they
  // get a removal version of our own, so replicas that still hold them drop
  // them too, instead of each side keeping what it had.
  // A deletion that wins over a concurrent edit by policy (the edit beats
  // it otherwise). The edited values go to the conflict log, and the
  // deletion gets a new local version, which knows both sides: replicas that
  // still hold the edit take the deletion from it instead of seeing a
  // conflict again.
  ItemMetadata WinningDeletion(const ItemMetadata& local, const std::vector<UnitVersion>& units) {
    ItemMetadata deleted = local;
    deleted.tombstone = true;
    deleted.units = MergedUnits(local.units, units, dest_keys_);
    deleted.updated = Version{0, dest_.hlc().Next()};
    RaiseLocal(deleted.updated);
    return deleted;
  }

  // The source deleted an item that this replica edited; the source wins.
  Status DeleteEdited(const ItemMetadata& change, const ItemMetadata& local, Batch& batch) {
    MESHSYNC_RETURN_IF_ERROR(Settle(batch));
    std::vector<ChangeUnitId> edited;
    for (const UnitVersion& unit : local.units) {
      if (!made_with_.Contains(local.id, unit.unit, unit.version)) edited.push_back(unit.unit);
    }
    std::vector<UnitData> data;
    MESHSYNC_RETURN_IF_ERROR(dest_.provider().LoadChangeData(local, edited, data));
    SaveRequest request{SaveAction::kDelete, change.id, &local, {}, {}, {}};
    MESHSYNC_ASSIGN_OR_RETURN(SaveResult saved, dest_.provider().SaveChange(request));
    ++report_.conflicts;
    for (UnitData& unit : data) {
      batch.store.new_conflicts.push_back(
          Conflict(change.id, unit.unit, ConflictKind::kUpdateDelete, change.updated,
                   *local.FindUnit(unit.unit),
                   /*loser_is_delete=*/false, std::move(unit.data)));
    }
    ItemMetadata deleted = WinningDeletion(local, change.units);
    deleted.key = std::move(saved.key);
    deleted.provider_state = std::move(saved.provider_state);
    batch.store.upserts.push_back(std::move(deleted));
    ++report_.deleted;
    return Status::Ok();
  }

  // This replica deleted an item that the source edited; this side wins.
  Status KeepDeletion(const ItemMetadata& source_item, const ItemMetadata& change,
                      const ItemMetadata& local, Batch& batch) {
    std::vector<ChangeUnitId> edited;
    for (const UnitVersion& unit : change.units) {
      if (!dest_knowledge_.Contains(change.id, unit.unit, unit.version))
        edited.push_back(unit.unit);
    }
    std::vector<UnitData> data;
    MESHSYNC_RETURN_IF_ERROR(LoadSource(source_item, edited, data));
    ++report_.conflicts;
    for (UnitData& unit : data) {
      batch.store.new_conflicts.push_back(
          Conflict(change.id, unit.unit, ConflictKind::kDeleteUpdate, local.updated,
                   *change.FindUnit(unit.unit),
                   /*loser_is_delete=*/false, std::move(unit.data)));
    }
    batch.store.upserts.push_back(WinningDeletion(local, change.units));
    return Status::Ok();
  }

  Status Resurrect(const ItemMetadata& source_item, ItemMetadata change, const ItemMetadata& local,
                   Batch& batch) {
    Supersede(local.units, made_with_, change);
    return Create(source_item, std::move(change), &local, batch);
  }

  // A deletion lost to a concurrent edit, so the item lives on in
  // `survivor`'s state. The deletion knew unit versions `deleted_units` that
  // the survivor's side (whose knowledge is `survivor_known`) never saw;
  // replicas that still hold those values must give them up, or each side
  // would keep what it had while believing it knew the other's state. So
  // each such unit gets a new local version: the survivor's value again, or
  // a removal if the survivor has no such unit.
  void Supersede(const std::vector<UnitVersion>& deleted_units, const Knowledge& survivor_known,
                 ItemMetadata& survivor) {
    for (const UnitVersion& unit : deleted_units) {
      if (survivor_known.Contains(survivor.id, unit.unit, unit.version)) continue;
      Version restamp{0, dest_.hlc().Next()};
      RaiseLocal(restamp);
      survivor.SetUnit(unit.unit, restamp);
    }
    survivor.updated = LatestOf(survivor, dest_keys_);
  }

  // Creates (or brings back) the item with every unit the source has.
  Status Create(const ItemMetadata& source_item, ItemMetadata change, const ItemMetadata* local,
                Batch& batch) {
    std::vector<ChangeUnitId> ids = UnitIds(source_item);
    std::vector<UnitData> data;
    data.reserve(ids.size());
    MESHSYNC_RETURN_IF_ERROR(LoadSource(source_item, ids, data));
    if (dest_filtered_) {
      MESHSYNC_RETURN_IF_ERROR(FinishCommit());
      if (!dest_.provider().Accepts(change.id, data)) {
        ++report_.skipped;  // outside the destination's filter: learned, not held
        return Status::Ok();
      }
    }
    SaveRequest request{SaveAction::kCreate, change.id, local, {}, {}, SourceData(source_item)};
    SplitRemovals(ids, std::move(data), request);
    Defer(std::move(request), [this, &batch, change = std::move(change)](SaveResult saved) mutable {
      change.key = std::move(saved.key);
      change.provider_state = std::move(saved.provider_state);
      Restamp(saved.rewritten_units, change);
      batch.store.upserts.push_back(std::move(change));
      ++report_.created;
    });
    return Status::Ok();
  }

  Status Update(const ItemMetadata& source_item, const ItemMetadata& change,
                const ItemMetadata& local, Batch& batch) {
    ItemMetadata result = local;
    std::vector<ChangeUnitId> to_apply;  // take the source's data (loaded below)
    // Values already known here: a conflict's winning or merged value, or
    // nullopt for a unit to remove (a newer incarnation dropped it, or the
    // winning side removed it).
    std::map<ChangeUnitId, std::optional<std::string>> decided;
    if (!(change.created == local.created)) {
      if (made_with_.Contains(change.id, local.created)) {
        // The source re-created the item knowing ours: units it knew of and
        // did not keep are gone; units changed here since are kept.
        for (const UnitVersion& unit : local.units) {
          if (change.FindUnit(unit.unit) != nullptr ||
              !made_with_.Contains(change.id, unit.unit, unit.version)) {
            continue;
          }
          result.SetUnit(unit.unit, change.created);
          decided[unit.unit] = std::nullopt;
        }
        result.created = change.created;
      } else if (!dest_knowledge_.Contains(change.id, change.created)) {
        result.created = Later(local.created, change.created, dest_keys_);
      }
    }
    for (const UnitVersion& unit : change.units) {
      if (dest_knowledge_.Contains(change.id, unit.unit, unit.version)) continue;
      const Version* mine = local.FindUnit(unit.unit);
      if (mine == nullptr || made_with_.Contains(change.id, unit.unit, *mine)) {
        to_apply.push_back(unit.unit);
        result.SetUnit(unit.unit, unit.version);
        continue;
      }
      MESHSYNC_RETURN_IF_ERROR(
          ResolveConflict(source_item, change, unit, *mine, result, decided, batch));
    }
    if (to_apply.empty() && decided.empty() && result.units == local.units &&
        result.created == local.created) {
      return Status::Ok();
    }

    std::vector<UnitData> data;
    if (!to_apply.empty()) MESHSYNC_RETURN_IF_ERROR(LoadSource(source_item, to_apply, data));
    SaveRequest request{SaveAction::kUpdate, change.id, &local, {}, {}, SourceData(source_item)};
    SplitRemovals(to_apply, std::move(data), request);
    for (auto& [unit, value] : decided) {
      if (value.has_value()) {
        request.units.push_back(UnitData{unit, std::move(*value)});
      } else {
        request.removed_units.push_back(unit);
      }
    }
    if (request.units.empty() && request.removed_units.empty()) {
      result.updated = LatestOf(result, dest_keys_);
      batch.store.upserts.push_back(std::move(result));
      return Status::Ok();
    }
    Defer(std::move(request), [this, &batch, result = std::move(result)](SaveResult saved) mutable {
      result.key = std::move(saved.key);
      result.provider_state = std::move(saved.provider_state);
      Restamp(saved.rewritten_units, result);
      ++report_.updated;
      result.updated = LatestOf(result, dest_keys_);
      batch.store.upserts.push_back(std::move(result));
    });
    return Status::Ok();
  }

  // Unit `unit` changed on both sides: the destination's version `mine` is
  // not in the source's made-with knowledge.
  Status ResolveConflict(const ItemMetadata& source_item, const ItemMetadata& change,
                         const UnitVersion& unit, const Version& mine, ItemMetadata& result,
                         std::map<ChangeUnitId, std::optional<std::string>>& decided,
                         Batch& batch) {
    MESHSYNC_RETURN_IF_ERROR(Settle(batch));
    ChangeUnitId unit_ids[] = {unit.unit};
    std::vector<UnitData> theirs;
    std::vector<UnitData> ours;
    MESHSYNC_RETURN_IF_ERROR(source_.provider().LoadChangeData(source_item, unit_ids, theirs));
    // `result` carries the destination's key and provider state.
    MESHSYNC_RETURN_IF_ERROR(dest_.provider().LoadChangeData(result, unit_ids, ours));
    // An empty string stands for a removed unit in the conflict log.
    bool their_removed = theirs.empty();
    bool our_removed = ours.empty();
    std::string their_data = their_removed ? std::string() : std::move(theirs[0].data);
    std::string our_data = our_removed ? std::string() : std::move(ours[0].data);
    bool source_wins_rule = VersionWins(unit.version, dest_keys_.IdOf(unit.version.replica), mine,
                                        dest_keys_.IdOf(mine.replica));
    if (their_removed == our_removed &&
        (their_data == our_data ||
         (!their_removed && dest_.provider().Equivalent(unit.unit, our_data, their_data)))) {
      // The same value reached both sides (or a crash left data ahead of its
      // metadata): no conflict, just agree on one version, and its value.
      if (source_wins_rule) {
        result.SetUnit(unit.unit, unit.version);
        if (their_data != our_data) decided[unit.unit] = std::move(their_data);
      }
      return Status::Ok();
    }
    ++report_.conflicts;
    bool take_source = source_wins_rule;
    switch (options_.policy) {
      case ConflictPolicy::kKeepBoth:
        break;
      case ConflictPolicy::kSourceWins:
        take_source = true;
        break;
      case ConflictPolicy::kDestinationWins:
        take_source = false;
        break;
      case ConflictPolicy::kMerge: {
        if (their_removed || our_removed) break;  // nothing to merge: the rule decides
        MESHSYNC_ASSIGN_OR_RETURN(
            std::string value,
            dest_.provider().MergeUnit(change.id, unit.unit, our_data, their_data));
        // The merged value is a new write that knows both inputs.
        Version merged_version{0, dest_.hlc().Next()};
        RaiseLocal(merged_version);
        result.SetUnit(unit.unit, merged_version);
        decided[unit.unit] = std::move(value);
        return Status::Ok();
      }
      case ConflictPolicy::kDefer: {
        ++report_.deferred;
        batch.learned = batch.learned.Exclude(change.id, unit.unit);
        ConflictRecord record = Conflict(change.id, unit.unit, ConflictKind::kUpdateUpdate, mine,
                                         unit.version, false, their_data, true);
        MESHSYNC_ASSIGN_OR_RETURN(bool logged, AlreadyLogged(record));
        if (!logged) batch.store.new_conflicts.push_back(std::move(record));
        return Status::Ok();
      }
    }
    if (options_.policy == ConflictPolicy::kKeepBoth && !their_removed && !our_removed) {
      MESHSYNC_RETURN_IF_ERROR(KeepLosingValue(
          source_item, result, unit, take_source ? mine : unit.version, take_source,
          take_source ? our_data : their_data, take_source ? their_data : our_data, batch));
    }
    if (take_source) {
      decided[unit.unit] = their_removed ? std::nullopt : std::optional(std::move(their_data));
      result.SetUnit(unit.unit, unit.version);
      ConflictRecord record = Conflict(change.id, unit.unit, ConflictKind::kUpdateUpdate,
                                       unit.version, mine, false, std::move(our_data));
      MESHSYNC_ASSIGN_OR_RETURN(bool logged, AlreadyLogged(record));
      if (!logged) {
        // Our value is about to be overwritten: preserve it durably first,
        // so a crash between the data write and the batch's metadata commit
        // cannot lose it. (Retrying the batch finds it logged already.)
        StoreBatch preserve;
        preserve.new_conflicts.push_back(std::move(record));
        store_failure_ = SourceDurable();
        if (store_failure_.ok()) store_failure_ = dest_.store().Commit(preserve);
        MESHSYNC_RETURN_IF_ERROR(store_failure_);
      }
    } else {
      batch.store.new_conflicts.push_back(Conflict(change.id, unit.unit,
                                                   ConflictKind::kUpdateUpdate, mine, unit.version,
                                                   false, std::move(their_data)));
    }
    return Status::Ok();
  }

  // Whether the destination's log already holds this conflict (same item,
  // unit, loser version and kind of record): a deferred conflict is offered
  // again every session, and a preserved loser is logged before the batch
  // that may be retried.
  // A failure to read the log is the store failing, and ends the session.
  Result<bool> AlreadyLogged(const ConflictRecord& record) {
    if (!logged_loaded_) {
      auto conflicts = dest_.store().ListConflicts();
      if (!conflicts.ok()) {
        store_failure_ = conflicts.status();
        return store_failure_;
      }
      for (const ConflictRecord& known : *conflicts) logged_.insert(LogKey(known));
      logged_loaded_ = true;
    }
    return !logged_.insert(LogKey(record)).second;
  }
  static std::tuple<ItemId, ChangeUnitId, ReplicaKey, Tick, bool> LogKey(const ConflictRecord& r) {
    return {r.item, r.unit, r.loser.replica, r.loser.tick, r.deferred};
  }

  ConflictRecord Conflict(const ItemId& item, ChangeUnitId unit, ConflictKind kind,
                          const Version& winner, const Version& loser, bool loser_is_delete,
                          std::string loser_data, bool deferred = false) {
    ConflictRecord record;
    record.item = item;
    record.unit = unit;
    record.kind = kind;
    record.winner = winner;
    record.loser = loser;
    record.loser_is_delete = loser_is_delete;
    record.loser_data = std::move(loser_data);
    record.deferred = deferred;
    record.detected_millis = dest_.clock().NowMillis();
    return record;
  }

  Replica& source_;
  Replica& dest_;
  const SyncOptions& options_;
  DirectionReport& report_;
  SyncProgress progress_;

  bool recovery_ = false;
  Knowledge dest_known_;              // destination knowledge at the start, source keys
  ReplicaKeyMap dest_keys_;           // destination keys, grown by the source's replicas
  KeyTranslator to_dest_;             // source keys -> dest_keys_
  Knowledge made_with_;               // source knowledge, destination keys
  Knowledge dest_knowledge_;          // destination knowledge for the current batch
  Status store_failure_;              // a store write, or a data commit, failed inside ApplyChange
  bool unannounced_ = false;          // a batch committed that the provider has not heard of
  std::vector<PendingSave> pending_;  // handed to the provider by Settle
  size_t pending_bytes_ = 0;
  bool dest_filtered_ = false;  // the destination's provider filters items
  // The last window's data is being committed (FinishCommit), on
  // `committing_` if the provider commits in the background.
  bool committing_data_ = false;
  std::thread committing_;
  Status data_committed_;
  bool logged_loaded_ = false;
  std::set<std::tuple<ItemId, ChangeUnitId, ReplicaKey, Tick, bool>> logged_;
};

}  // namespace

void DirectionReport::Add(const DirectionReport& other) {
  created += other.created;
  updated += other.updated;
  deleted += other.deleted;
  conflicts += other.conflicts;
  deferred += other.deferred;
  conflict_copies += other.conflict_copies;
  local_versions += other.local_versions;
  skipped += other.skipped;
  bytes += other.bytes;
  batches += other.batches;
  recovery = recovery || other.recovery;
}

ItemId ConflictCopyId(const ItemId& item, const ReplicaId& loser_replica, Tick loser_tick) {
  // splitmix64 finalizer over the inputs: deterministic everywhere, and a
  // collision with a real item needs 128 equal bits.
  auto mix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(item.hi) ^ mix(item.lo + 1);
  h = mix(h ^ loser_replica.hi) ^ mix(loser_replica.lo + 2);
  uint64_t hi = mix(h ^ loser_tick);
  uint64_t lo = mix(hi ^ 0x636F6E666C696374ull);  // "conflict"
  return ItemId(hi, lo);
}

namespace {

// Runs the session's directions in turn.
Result<SyncReport> RunDirections(Replica& a, Replica& b, const SyncOptions& options) {
  SyncReport report;
  auto run = [&](Replica& source, Replica& dest, bool a_to_b) -> Status {
    DirectionReport& direction = a_to_b ? report.a_to_b : report.b_to_a;
    DirectionRun session(source, dest, options, a_to_b, direction);
    auto finished = session.Run();
    if (!finished.ok()) return finished.status();
    if (!*finished) report.cancelled = true;
    return Status::Ok();
  };
  if (options.direction != SyncDirection::kBToA) {
    MESHSYNC_RETURN_IF_ERROR(run(a, b, true));
  }
  if (options.direction != SyncDirection::kAToB && !report.cancelled) {
    MESHSYNC_RETURN_IF_ERROR(run(b, a, false));
  }
  return report;
}

}  // namespace

Result<SyncReport> Synchronize(Replica& a, Replica& b, const SyncOptions& options) {
  if (a.id() == b.id()) return InvalidArgumentError("cannot sync a replica with itself");
  if (options.detect_changes) {
    // Each side's last detected changes are committed while the session
    // goes on; a direction flushes its source before its destination
    // commits anything (DirectionRun), and both are finished below.
    MESHSYNC_RETURN_IF_ERROR(a.StartDetectChanges());
    MESHSYNC_RETURN_IF_ERROR(b.StartDetectChanges());
  }
  Result<SyncReport> report = RunDirections(a, b, options);
  // A failed session still leaves the detected changes durable, but only
  // a completed one lets the providers move on.
  if (!report.ok()) {
    a.store().Flush().IgnoreError();
    b.store().Flush().IgnoreError();
    return report;
  }
  MESHSYNC_RETURN_IF_ERROR(a.FinishDetection());
  MESHSYNC_RETURN_IF_ERROR(b.FinishDetection());
  return report;
}

}  // namespace meshsync
