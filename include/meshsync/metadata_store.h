// MetadataStore: everything a replica remembers about its sync state.
//
// A store holds the replica's id, the name of the provider it belongs to, its
// replica key map, its current tick, its knowledge and forgotten knowledge, one
// ItemMetadata per item (live or tombstone), and a conflict log. The engine is
// its only writer.
//
// Reads see the last committed state. Writes are collected in a StoreBatch
// and applied by Commit() atomically: after a crash at any point, reopening
// the store shows either the whole batch or none of it. That is what lets a
// session persist item metadata, learned knowledge and conflicts together, so
// an interrupted session neither loses nor repeats a change.
//
// Two implementations: OpenMemoryStore (tests, ephemeral replicas) and
// OpenSqliteStore (one SQLite file in WAL mode, schema versioned and migrated
// on open). Stores are thread-compatible: one session uses a store at a time
// (the SQLite store's background commits run on a thread of its own).
#ifndef MESHSYNC_METADATA_STORE_H_
#define MESHSYNC_METADATA_STORE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/env.h"
#include "meshsync/ids.h"
#include "meshsync/knowledge.h"
#include "meshsync/status.h"
#include "meshsync/version.h"

namespace meshsync {

struct UnitVersion {
  ChangeUnitId unit;
  Version version;
  friend bool operator==(const UnitVersion&, const UnitVersion&) = default;
};

// What the replica knows about one item. Versions use the store's keys.
struct ItemMetadata {
  ItemId id;
  Version created;  // who created the item, and when
  Version updated;  // the latest change to the item (a unit, or its deletion)
  bool tombstone = false;
  // One per unit the item has or had, ordered by unit. A unit whose data
  // the provider does not have was removed at that version. Tombstones keep
  // the units they had when deleted.
  std::vector<UnitVersion> units;
  std::string key;             // provider-owned (a path, a primary key); may be empty
  std::string provider_state;  // provider-owned change-detection state (a stat cache)

  // The version of `unit`, or nullptr if the item has no such unit.
  const Version* FindUnit(ChangeUnitId unit) const;
  // Sets the version of `unit`, adding the unit if needed.
  void SetUnit(ChangeUnitId unit, const Version& version);
  friend bool operator==(const ItemMetadata&, const ItemMetadata&) = default;
};

// Whether a replica whose knowledge is `known` (in the keys of `item`'s
// versions) has seen every version of `item`: its creation and each unit's
// latest change, or its deletion.
bool KnowsAllOf(const Knowledge& known, const ItemMetadata& item);

enum class ConflictKind : uint8_t {
  kUpdateUpdate = 1,  // both replicas changed the same unit
  kUpdateDelete = 2,  // this replica changed an item the other deleted
  kDeleteUpdate = 3,  // this replica deleted an item the other changed
};
std::string_view ConflictKindName(ConflictKind kind);

// A preserved conflict: the losing side's version and data, so nothing is
// lost and a person (or a later policy) can restore it.
struct ConflictRecord {
  uint64_t id = 0;  // assigned by Commit()
  ItemId item;
  ChangeUnitId unit = 0;
  ConflictKind kind = ConflictKind::kUpdateUpdate;
  Version winner;  // store keys
  Version loser;
  bool loser_is_delete = false;
  std::string loser_data;  // the losing unit's data, as the provider gave it
  bool deferred = false;   // resolution was postponed: nothing was applied
  uint64_t detected_millis = 0;
  friend bool operator==(const ConflictRecord&, const ConflictRecord&) = default;
};

// The replica-wide part of the state, small enough to keep in memory.
struct ReplicaState {
  ReplicaId id;
  std::string provider_name;
  ReplicaKeyMap keys;
  Tick tick = 0;  // the largest tick this replica has issued
  Knowledge knowledge;
  Knowledge forgotten;
};

// Changes to commit together.
struct StoreBatch {
  std::vector<ItemMetadata> upserts;
  std::vector<ItemId> erasures;       // tombstones forgotten by clean-up
  std::optional<ReplicaKeyMap> keys;  // REQUIRES: extends the current map
  std::optional<Tick> tick;           // REQUIRES: >= the current tick
  std::optional<Knowledge> knowledge;
  std::optional<Knowledge> forgotten;
  std::vector<ConflictRecord> new_conflicts;  // ids are assigned on commit
  std::vector<uint64_t> resolved_conflicts;   // conflict ids to drop from the log

  bool empty() const {
    return upserts.empty() && erasures.empty() && !keys && !tick && !knowledge && !forgotten &&
           new_conflicts.empty() && resolved_conflicts.empty();
  }
};

class MetadataStore {
 public:
  MetadataStore() = default;
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;
  virtual ~MetadataStore() = default;

  // The committed replica-wide state.
  virtual const ReplicaState& state() const = 0;

  // The item's metadata, or nullopt if the store has none.
  virtual Result<std::optional<ItemMetadata>> GetItem(const ItemId& id) = 0;
  // The item whose provider key is `key` (live or tombstone), or nullopt.
  virtual Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) = 0;
  // Appends to `out` the items with first <= id <= last in id order, at most
  // `limit` of them.
  virtual Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                           std::vector<ItemMetadata>& out) = 0;
  virtual Result<size_t> CountItems() = 0;
  // Calls `visit` on the items with first <= id <= last, in id order, until
  // it returns false. The item it is handed is reused from call to call:
  // move out what is kept. `visit` must not commit to this store. The cheap
  // way to read many items: they are not collected one by one in a vector.
  // The default reads them with ScanItems, a chunk at a time.
  virtual Status VisitItems(const ItemId& first, const ItemId& last,
                            const std::function<bool(ItemMetadata&)>& visit);

  // What a session's source sends: the items with id >= `first` that a
  // replica whose knowledge is `known` (in this store's keys) lacks (see
  // KnowsAllOf), in id order. Appends at most `limit` of them to `out`, and
  // says how far it looked: every item from `first` through `scan.through`
  // was accounted for (ItemId::Max() once the end was reached). Unless
  // `scan.indexed`, each was read: `scan.examined` of them. An indexed scan
  // read only the items changed since a state that `known` contains (the
  // SQLite store keeps such a log); `examined` then counts those alone.
  // The default scans and filters; a remote store filters where the items
  // are, so that what the destination has does not travel.
  struct ChangeScan {
    ItemId through;
    size_t examined = 0;
    bool indexed = false;
  };
  virtual Status ScanChanges(const ItemId& first, const Knowledge& known, size_t limit,
                             std::vector<ItemMetadata>& out, ChangeScan& scan);

  virtual Result<std::vector<ConflictRecord>> ListConflicts() = 0;

  // Applies `batch` atomically and durably (a store opened with
  // StoreDurability::kOwnVersions: as durably as the batch needs). On
  // failure nothing is applied and the state is unchanged.
  virtual Status Commit(const StoreBatch& batch) = 0;

  // Applies `batch` as Commit does, but may write it in the background and
  // return first: reads and state() see it at once, and it is durable once
  // Flush (or a later Commit) returns OK. A caller that makes anything
  // depend on the batch outside this store (advances a change feed's
  // anchor, sends its versions to a peer) calls Flush first. A batch that
  // fails in the background is reported by the next call that waits for it
  // (Flush, Commit, CommitInBackground, or a read that must see it on disk)
  // and by every call after that: the store must be reopened. The default
  // commits in the foreground.
  virtual Status CommitInBackground(const StoreBatch& batch) { return Commit(batch); }
  // Waits until every batch committed so far is durable.
  virtual Status Flush() { return Status::Ok(); }

  // Commits `batch` as CommitInBackground does, in two steps, for a caller
  // that must make something else durable first, which the batch must never
  // outlast (the engine: a provider's data, before the metadata that
  // describes it). StageInBackground may start writing the batch, while the
  // caller does its part, but commits nothing; ReleaseStaged lets the commit
  // go ahead (durable once Flush returns), and AbandonStaged drops the
  // batch instead. In between, the caller writes nothing to this store, and
  // reads it only if ShowsStaged. After AbandonStaged the store may have to be reopened: every call
  // fails if its state in memory had already taken the batch in. The
  // default keeps the batch and commits it on release.
  virtual Status StageInBackground(const StoreBatch& batch) {
    staged_ = batch;
    return Status::Ok();
  }
  virtual Status ReleaseStaged() {
    if (!staged_) return Status::Ok();
    StoreBatch batch = *std::move(staged_);
    staged_.reset();
    return CommitInBackground(batch);
  }
  virtual void AbandonStaged() { staged_.reset(); }
  // Whether reads and state() see a staged batch until it is released or
  // abandoned, as they see CommitInBackground's; then the caller may read
  // the store in between (the engine decides the next batch meanwhile). The
  // default does not.
  virtual bool ShowsStaged() const { return false; }

 private:
  std::optional<StoreBatch> staged_;  // the default StageInBackground's
};

// Whether a power cut may undo `batch` once it is committed to a store in
// `state` without a loss the replica's peers cannot repair. It may unless it
// issues a version of the replica's own (replica key 0) newer than
// state.tick, or records a conflict. A power cut that undoes versions
// learned from peers, knowledge, or provider state takes the replica back
// to an earlier consistent state: its knowledge goes back with its items,
// so its peers send those versions again, and data the metadata no longer
// describes is found by the next detection (equal data is no conflict). One
// that undoes versions the replica issued is not repaired: they may already
// be with a peer, and the replica's knowledge of its own versions is its
// clock, which does not go back, so the peer's copy would never return.
bool MayBeUndoneByPowerCut(const ReplicaState& state, const StoreBatch& batch);

// How much of what a SQLite store commits a power cut may undo. A crash of
// the process undoes nothing either way: the system keeps what was written.
enum class StoreDurability {
  // Every commit is on the device when Commit (or, for a background
  // commit, Flush) returns.
  kEveryCommit,
  // Only commits that must be (see MayBeUndoneByPowerCut); the others are
  // left to the system's write-back, and the store arranges not to wait for
  // the device on their behalf. For a replica whose data is no more durable
  // than that: a folder synced without --fsync, whose files the kernel
  // writes back when it will.
  kOwnVersions,
};

// A store that lives in memory. `provider_name` as in OpenSqliteStore.
std::unique_ptr<MetadataStore> OpenMemoryStore(ReplicaId id, std::string provider_name);

// Opens the SQLite store at `path`, creating it (with a new random replica
// id) if the file does not exist, and migrating an older schema. Fails with
// kFailedPrecondition if the store belongs to a different provider or was
// written by a newer meshsync, kDataLoss if the file is corrupt, and
// kUnavailable if it cannot be opened. While it is open, the store must be
// the only writer of its file (the replica's lock sees to that): it answers
// some lookups from what it knows it wrote.
Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(
    const std::string& path, std::string_view provider_name, Random& random,
    StoreDurability durability = StoreDurability::kEveryCommit);

// A read-only view of the SQLite store at `path` as it is now: reads see
// that state for as long as the view is open, while the replica's own store
// goes on committing (SQLite's WAL keeps the old pages). Serves a peer's
// session without holding up the replica's own. Commit fails with
// kFailedPrecondition; a missing or empty store is kNotFound.
Result<std::unique_ptr<MetadataStore>> OpenSqliteSnapshot(const std::string& path,
                                                          std::string_view provider_name);

}  // namespace meshsync

#endif  // MESHSYNC_METADATA_STORE_H_
