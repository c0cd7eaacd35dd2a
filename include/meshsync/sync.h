// Replica and Synchronize: the sync engine's entry points.
//
// A Replica pairs a provider with the metadata store kept for it, and the
// clock and randomness it draws versions and ids from. Synchronize() runs one
// session between two replicas of any kinds: it exchanges knowledge,
// enumerates changes in item-id order in batches, detects conflicts per change
// unit, resolves them by policy, applies the rest through the destination's
// provider and commits data, metadata and learned knowledge batch by batch.
// An interrupted session (cancelled, crashed, failed) loses nothing and
// repeats nothing: the next one resumes from the knowledge that was committed.
//
// Replica is thread-compatible; a replica takes part in one session at a time.
#ifndef MESHSYNC_SYNC_H_
#define MESHSYNC_SYNC_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "meshsync/env.h"
#include "meshsync/metadata_store.h"
#include "meshsync/provider.h"
#include "meshsync/status.h"

namespace meshsync {

class Replica {
 public:
  // Binds `provider` to `store`. Fails with kFailedPrecondition when the
  // store was made for another provider. All references must outlive the
  // replica.
  static Result<std::unique_ptr<Replica>> Open(MetadataStore& store, Provider& provider,
                                               Clock& clock = SystemClock(),
                                               Random& random = SystemRandom());

  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Records the provider's local changes with new versions. Returns once
  // they are durable and the provider has heard so (ChangesRecorded).
  Status DetectChanges();
  // The same for the changes in `scope` only (Provider::DetectChangesIn).
  Status DetectChangesIn(const ChangeScope& scope);

  // DetectChanges in two halves, so that a session may start while the last
  // of the changes is still being committed (MetadataStore::
  // CommitInBackground). StartDetectChanges returns with them readable from
  // the store, and not yet durable; FinishDetection waits until they are,
  // then tells the provider. Whoever hands them to another replica flushes
  // this replica's store before that replica commits them, as the session
  // does. FinishDetection does nothing when nothing waits for it.
  Status StartDetectChanges();
  Status FinishDetection();

  // Forgets tombstones whose deletion is older than `cutoff_millis` (wall
  // clock), and raises forgotten knowledge so that a peer that has not seen
  // those deletions gets a recovery sync instead of resurrecting the items.
  // Returns how many tombstones were forgotten.
  Result<size_t> ForgetTombstones(uint64_t cutoff_millis);

  const ReplicaState& state() const { return store_.state(); }
  const ReplicaId& id() const { return store_.state().id; }
  MetadataStore& store() { return store_; }
  Provider& provider() { return provider_; }
  Clock& clock() { return clock_; }
  Random& random() { return random_; }
  HybridLogicalClock& hlc() { return hlc_; }

 private:
  Status Detect(const ChangeScope* scope);

  Replica(MetadataStore& store, Provider& provider, Clock& clock, Random& random)
      : store_(store),
        provider_(provider),
        clock_(clock),
        random_(random),
        hlc_(clock, store.state().tick) {}

  MetadataStore& store_;
  Provider& provider_;
  Clock& clock_;
  Random& random_;
  HybridLogicalClock hlc_;
  bool unrecorded_ = false;  // StartDetectChanges has yet to be finished
};

enum class SyncDirection {
  kTwoWay,  // a -> b, then b -> a
  kAToB,
  kBToA,
};

// How a concurrent update of the same change unit is resolved.
enum class ConflictPolicy {
  // The deterministic winner (higher tick, then higher replica id) is kept
  // everywhere; the loser is preserved in the conflict log.
  kKeepBoth,
  // The session's source (destination) wins, also when its side deleted an
  // item the other edited; the losing values are still logged. Under the
  // other policies an edit beats a concurrent delete.
  kSourceWins,
  kDestinationWins,
  kMerge,  // Provider::MergeUnit decides a new value
  kDefer,  // log it, apply nothing, try again next session
};

// Reported after every batch. The total of bytes is not known in advance
// (only the data of changed units is loaded, as it is applied), so progress
// is items_done / items_total; bytes_done says how much data moved.
struct SyncProgress {
  uint64_t items_done = 0;   // source items examined so far in this direction
  uint64_t items_total = 0;  // source items to examine
  uint64_t bytes_done = 0;   // unit data loaded from the source so far
  bool a_to_b = true;
};

struct SyncOptions {
  SyncDirection direction = SyncDirection::kTwoWay;
  ConflictPolicy policy = ConflictPolicy::kKeepBoth;
  size_t batch_size = 1000;  // source items per batch (and per transaction)
  bool detect_changes = true;
  // When a destination is too far behind (it lacks what the source has
  // forgotten), recover by full enumeration; when false, fail instead.
  bool allow_recovery = true;
  std::function<void(const SyncProgress&)> on_progress;
  // Checked before each batch; returning true stops the session there.
  std::function<bool()> should_cancel;
};

struct ItemError {
  ItemId item;
  Status status;
};

struct DirectionReport {
  uint64_t created = 0;
  uint64_t updated = 0;
  uint64_t deleted = 0;
  uint64_t conflicts = 0;  // concurrent changes found (all policies)
  uint64_t deferred = 0;
  uint64_t conflict_copies = 0;  // losing values kept as items (KeepLosingValue)
  // Versions the destination made while applying (merges, restamps,
  // conflict copies, rewritten units): changes the source has not seen yet.
  uint64_t local_versions = 0;
  uint64_t skipped = 0;  // not applied this session (errors, filters)
  uint64_t bytes = 0;
  uint64_t batches = 0;
  bool recovery = false;  // ran a full-enumeration recovery
  std::vector<ItemError> errors;

  // Sums `other`'s counters into this one (several sessions, one report).
  // Errors are left alone: callers keep the ones that still stand.
  void Add(const DirectionReport& other);
};

struct SyncReport {
  DirectionReport a_to_b;
  DirectionReport b_to_a;
  bool cancelled = false;
};

// The id of the item that keeps the losing value of a conflict on `item`,
// made by `loser_replica` at `loser_tick` (see Provider::KeepLosingValue).
ItemId ConflictCopyId(const ItemId& item, const ReplicaId& loser_replica, Tick loser_tick);

// Runs one session between `a` and `b`. Fails if a store or provider fails
// in a way that stops the session (what was committed before stays
// committed); per-item failures are reported in DirectionReport::errors and
// retried next session.
Result<SyncReport> Synchronize(Replica& a, Replica& b, const SyncOptions& options = {});

}  // namespace meshsync

#endif  // MESHSYNC_SYNC_H_
