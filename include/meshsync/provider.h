// Provider: the plug-in that adapts one kind of store (a folder, a table, a
// feed, a record set) to the sync engine.
//
// The engine owns the metadata; the provider owns the data. A provider
//   * reports changes made to its store since the last call (DetectChanges),
//     comparing what it sees with the provider_state it saved in each item's
//     metadata (a stat cache, per-field hashes, a row version...);
//   * loads the data of some change units of one of its items
//     (LoadChangeData), for a peer that applies the change or for the
//     conflict log;
//   * applies a change the engine decided on (SaveChange) and returns the
//     item's new key and provider_state, which the engine commits with the
//     item's metadata;
//   * makes saved changes durable (CommitChanges) before the engine commits
//     the metadata that describes them. If the process dies between the two,
//     the next DetectChanges sees data that its provider_state does not
//     explain and reports it as a local change: nothing is lost, and the
//     engine recognises equal data on both sides as no conflict.
//
// Providers build against the public headers only. A provider's Name() is
// stored in its replica's metadata and checked whenever the replica is
// opened, so one provider's metadata is never read by another.
//
// A provider is used by one session at a time (thread-compatible).
#ifndef MESHSYNC_PROVIDER_H_
#define MESHSYNC_PROVIDER_H_

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/ids.h"
#include "meshsync/metadata_store.h"
#include "meshsync/status.h"

namespace meshsync {

struct UnitData {
  ChangeUnitId unit;
  std::string data;
  friend bool operator==(const UnitData&, const UnitData&) = default;
};

// One local change, as a provider reports it.
struct LocalChange {
  // The item, if the provider knows it (from FindByKey or its own ids). A
  // creation may name the id it wants, e.g. a store that keys by ItemId.
  std::optional<ItemId> id;
  bool deleted = false;
  // Creation: every unit the item has. An update with none refreshes the
  // key and provider_state only (no new version).
  std::vector<ChangeUnitId> changed_units;
  std::string key;             // the item's key now
  std::string provider_state;  // saved with the item's metadata
};

// Given to Provider::DetectChanges; records changes into the metadata store
// with new versions from the replica's clock.
class ChangeRecorder {
 public:
  ChangeRecorder() = default;
  ChangeRecorder(const ChangeRecorder&) = delete;
  ChangeRecorder& operator=(const ChangeRecorder&) = delete;
  virtual ~ChangeRecorder() = default;

  virtual Result<std::optional<ItemMetadata>> FindItem(const ItemId& id) = 0;
  virtual Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) = 0;
  // Calls fn for every live item, in id order, including the changes
  // recorded so far in this pass; stops at fn's first error.
  virtual Status ForEachLiveItem(const std::function<Status(const ItemMetadata&)>& fn) = 0;
  // Records a creation, update or deletion; returns the item's id. Updating
  // or deleting an unknown id, or deleting a tombstone, is kInvalidArgument.
  // Takes the change (pass it with std::move: its key and state are kept).
  virtual Result<ItemId> Record(LocalChange change) = 0;

  // Records the deletion of every live item for which `gone` is true: for
  // providers that list their whole store and take what they did not find
  // for deleted.
  Status RecordDeletions(const std::function<bool(const ItemMetadata&)>& gone);
};

// Where a store changed, as a watcher saw it: places in the provider's own
// terms (for a folder, directories relative to its root, "" for the root).
// A place that is not `recursive` covers its direct entries only; a
// recursive one, everything below it (a directory created or moved in).
struct ChangeScope {
  struct Place {
    std::string path;
    bool recursive = false;
    friend bool operator==(const Place&, const Place&) = default;
  };
  std::vector<Place> places;
};

enum class SaveAction { kCreate, kUpdate, kDelete };

// A span of bytes of some bulk data.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Bulk data that a unit describes but does not contain: a file's bytes,
// whose content unit holds only its size and chunk hashes. Units stay small
// enough to hold in memory and compare; the bytes are streamed, and only
// when a change is applied.
class DataReader {
 public:
  DataReader() = default;
  DataReader(const DataReader&) = delete;
  DataReader& operator=(const DataReader&) = delete;
  virtual ~DataReader() = default;

  virtual uint64_t size() const = 0;
  // Fills `out` with the bytes at `offset`; kOutOfRange past the end.
  virtual Status ReadAt(uint64_t offset, std::span<char> out) = 0;
  // A local file descriptor holding the data, for in-kernel copies
  // (copy_file_range), or -1. Owned by the reader.
  virtual int LocalFd() const { return -1; }
  // The ranges the caller is about to read, in ascending order: a reader
  // that fetches ahead (from a peer) then fetches only these, so bytes the
  // caller found elsewhere (in its own files, in an interrupted transfer)
  // never cross the network. Reads outside them still work.
  virtual void WillRead(std::span<const ByteRange> ranges) { (void)ranges; }
  // kUnavailable if the data changed since the reader was opened (a file
  // edited while it was being copied): the copy must not be used.
  virtual Status Verify() { return Status::Ok(); }
};

// Opens the bulk data of one unit of the item being applied.
using DataOpener = std::function<Result<std::unique_ptr<DataReader>>(ChangeUnitId unit)>;

struct SaveRequest {
  SaveAction action;
  ItemId id;
  // The item's current metadata here (key, provider_state); null on create.
  const ItemMetadata* local = nullptr;
  // Create: every unit. Update: the units to overwrite. Delete: empty.
  std::vector<UnitData> units;
  // Units the item no longer has (create or update): remove them.
  std::vector<ChangeUnitId> removed_units;
  // The bulk data of `units`, from the replica the change comes from.
  DataOpener open_data;
};

struct SaveResult {
  std::string key;
  std::string provider_state;
  // Units the provider stored with a value of its own instead of the one it
  // was given (a file saved under another name because its name was taken).
  // The engine gives them a new local version, so the value spreads.
  std::vector<ChangeUnitId> rewritten_units;
};

// A conflict that the keep-both policy resolved: `unit` of `item` had two
// concurrent values and the loser's is about to be dropped (from this
// replica, or never applied to it).
struct LosingValue {
  ItemId item;
  const ItemMetadata* local = nullptr;  // the item's metadata here
  ChangeUnitId unit = 0;
  std::string_view data;         // the losing value
  std::string_view winner_data;  // the value that stays
  bool local_loses = false;      // whether the losing value is this replica's
  ReplicaId loser_replica;       // the replica that made the losing change
  Tick loser_tick = 0;           // and when (a hybrid logical clock tick)
  DataOpener open_data;          // the losing value's bulk data
};

// An item a provider created on its own, for the engine to record.
struct NewItem {
  std::vector<ChangeUnitId> units;
  std::string key;
  std::string provider_state;
};

class Provider {
 public:
  Provider() = default;
  Provider(const Provider&) = delete;
  Provider& operator=(const Provider&) = delete;
  virtual ~Provider() = default;

  // Stable name of the kind of store, persisted in the replica's metadata.
  virtual std::string_view Name() const = 0;

  // Reports every change since the last call. On failure, changes recorded
  // so far are kept and the rest are found by the next call.
  virtual Status DetectChanges(ChangeRecorder& recorder) = 0;

  // Reports the changes in `scope` (see ChangeScope), where a watcher saw
  // the store change since the last call: a pass that costs what changed
  // rather than what the store holds. Changes elsewhere may go unreported
  // until the next DetectChanges. The default detects everything.
  virtual Status DetectChangesIn(ChangeRecorder& recorder, const ChangeScope& scope) {
    (void)scope;
    return DetectChanges(recorder);
  }

  // Called once the changes DetectChanges reported are committed to the
  // metadata store. A provider that reads a change feed (triggers' tracking
  // rows, a server's sync token) advances its anchor here, never earlier: a
  // crash in between makes the next pass read the same changes again, which
  // is harmless because detection compares with provider_state.
  virtual Status ChangesRecorded() { return Status::Ok(); }

  // Appends the data of `units` of local item `item` to `out`. A unit the
  // item does not have is left out, and the engine reads that as "this unit
  // was removed" (its version records the removal). kNotFound or kUnavailable if the data changed
  // or vanished since it was detected: the engine skips the item this session.
  virtual Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                                std::vector<UnitData>& out) = 0;

  // Applies one change. On failure the store must be unchanged for this
  // item; the engine skips it and tries again next session.
  virtual Result<SaveResult> SaveChange(const SaveRequest& request) = 0;

  // Applies several changes, each as SaveChange would: each succeeds or
  // fails on its own, and `results` gets one entry per request, in request
  // order. The requests name different items. The engine gives a batch's
  // plain creations, updates and deletions here together, so a provider
  // whose items are independent of each other (rows) may apply them in the
  // order its store prefers, or several per statement. The default applies
  // them one at a time, in order, which any provider whose items depend on
  // each other (a file and its directory) relies on.
  virtual void SaveChanges(std::span<const SaveRequest> requests,
                           std::vector<Result<SaveResult>>& results) {
    for (const SaveRequest& request : requests) results.push_back(SaveChange(request));
  }

  // Makes every saved change durable. Called before the engine commits the
  // metadata of a batch.
  virtual Status CommitChanges() { return Status::Ok(); }

  // Whether CommitChanges may run on a thread of the engine's while the
  // engine goes on reading the source replica and deciding the next batch.
  // A commit mostly waits for the device (fsync), and that wait then costs
  // nothing. The engine calls no other method of this provider meanwhile; a
  // provider that says so shares nothing with the source's provider.
  virtual bool CommitsInBackground() const { return false; }

  // Called once the metadata of the changes CommitChanges made durable is
  // committed too: the metadata store now knows the provider's own writes,
  // so a provider that reads a change feed may skip them from here on
  // (never earlier, for the reason ChangesRecorded gives). A failure fails
  // the session, with every committed batch kept.
  virtual Status ChangesCommitted() { return Status::Ok(); }

  // For the merge conflict policy: combines two concurrent values of one
  // unit into the value both replicas will keep.
  virtual Result<std::string> MergeUnit(const ItemId& item, ChangeUnitId unit,
                                        std::string_view local, std::string_view remote) {
    (void)item;
    (void)unit;
    (void)local;
    (void)remote;
    return FailedPreconditionError(std::string(Name()) + " cannot merge conflicting values");
  }

  // Opens the bulk data of `unit` of local item `item` (see DataReader).
  // kUnavailable if it changed since it was detected.
  virtual Result<std::unique_ptr<DataReader>> OpenData(const ItemMetadata& item,
                                                       ChangeUnitId unit) {
    (void)item;
    (void)unit;
    return FailedPreconditionError(std::string(Name()) + " has no bulk data");
  }

  // Keep-both: a provider whose people edit items as a whole (a folder's
  // files) may keep a losing value as an item of its own, such as a
  // conflict copy next to the winner. The engine gives it an id derived from
  // the conflict, so every replica that resolves the same conflict makes the
  // same item; the default keeps the loser only in the conflict log.
  virtual Result<std::optional<NewItem>> KeepLosingValue(const ItemId& copy_id,
                                                         const LosingValue& loser) {
    (void)copy_id;
    (void)loser;
    return std::optional<NewItem>();
  }

  // Whether two values of `unit` mean the same to a person, so that
  // concurrent changes to them are no conflict (two copies of a file with
  // the same bytes and different mtimes). The engine then keeps the value
  // of the winning version everywhere.
  virtual bool Equivalent(ChangeUnitId unit, std::string_view a, std::string_view b) const {
    (void)unit;
    return a == b;
  }

  // Item filters. A filtered provider holds only the items it accepts: the
  // others are not created in it, and it never reports them as deleted.
  virtual bool IsFiltered() const { return false; }
  // Whether to hold a new item, given all its units.
  virtual bool Accepts(const ItemId& item, std::span<const UnitData> units) const {
    (void)item;
    (void)units;
    return true;
  }
};

}  // namespace meshsync

#endif  // MESHSYNC_PROVIDER_H_
