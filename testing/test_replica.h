// TestReplica: a record provider, a metadata store (in memory, or SQLite at
// a path) behind a FaultInjectingStore, a fake clock and seeded randomness,
// bound into a Replica. What scenario and property tests build replicas from.
#ifndef MESHSYNC_TESTING_TEST_REPLICA_H_
#define MESHSYNC_TESTING_TEST_REPLICA_H_

#include <memory>
#include <string>

#include "memory/record_provider.h"
#include "meshsync/sync.h"
#include "testing/fakes.h"
#include "testing/fault_store.h"

namespace meshsync::testing {

struct TestReplica {
  explicit TestReplica(uint64_t seed) : random(seed) {}

  FakeClock clock;
  SeededRandom random;
  RecordProvider provider;
  std::unique_ptr<FaultInjectingStore> store;
  std::unique_ptr<Replica> replica;

  // `sqlite_path` empty: an in-memory store.
  static Result<std::unique_ptr<TestReplica>> Make(uint64_t seed,
                                                   const std::string& sqlite_path = "") {
    auto node = std::make_unique<TestReplica>(seed);
    std::unique_ptr<MetadataStore> base;
    if (sqlite_path.empty()) {
      base = OpenMemoryStore(ReplicaId::Generate(node->random), std::string(RecordProvider::kName));
    } else {
      MESHSYNC_ASSIGN_OR_RETURN(base,
                                OpenSqliteStore(sqlite_path, RecordProvider::kName, node->random));
    }
    node->store = std::make_unique<FaultInjectingStore>(std::move(base));
    MESHSYNC_ASSIGN_OR_RETURN(
        node->replica, Replica::Open(*node->store, node->provider, node->clock, node->random));
    return node;
  }
};

}  // namespace meshsync::testing

#endif  // MESHSYNC_TESTING_TEST_REPLICA_H_
