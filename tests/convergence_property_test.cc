// The convergence property: whatever replicas do, in whatever order they
// meet, however sessions are interrupted, once every pair has synced
//   1. all replicas hold identical records;
//   2. every value ever written is present, was overwritten by a write that
//      knew it, or is preserved in a conflict log;
//   3. every replica's knowledge is a plain clock vector again.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <filesystem>
#include <set>

#include "testing/test_replica.h"

namespace meshsync {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kFields = {"title", "body", "tag"};

using Node = testing::TestReplica;

struct World {
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<ItemId> items;  // every item ever created
  // Written values (unique strings) and how each may legitimately vanish.
  std::set<std::string> written;
  std::set<std::string> overwritten_knowingly;
  std::string temp_dir;
  uint64_t next_value = 0;

  ~World() {
    if (!temp_dir.empty()) fs::remove_all(temp_dir);
  }
};

void AddNodes(World& world, size_t count, bool sqlite) {
  if (sqlite) {
    std::string pattern = (fs::temp_directory_path() / "meshsync-prop-XXXXXX").string();
    world.temp_dir = mkdtemp(pattern.data());
  }
  for (size_t idx = 0; idx < count; ++idx) {
    std::string path = sqlite ? world.temp_dir + "/" + std::to_string(idx) + ".db" : std::string();
    auto node = Node::Make(idx * 7919 + 17, path);
    RC_ASSERT(node.ok());
    world.nodes.push_back(std::move(*node));
  }
}

std::string ItemName(const World& world, const ItemId& item) {
  for (size_t idx = 0; idx < world.items.size(); ++idx) {
    if (world.items[idx] == item) return "item" + std::to_string(idx);
  }
  return item.ToHex();
}

void Write(World& world, Node& node, const ItemId& item, const std::string& field) {
  std::string value = "v" + std::to_string(world.next_value++);
  if (const Record* record = node.provider.Get(item)) {
    auto it = record->find(field);
    if (it != record->end()) world.overwritten_knowingly.insert(it->second);
  }
  node.provider.Put(item, field, value);
  RC_LOG() << "  write " << ItemName(world, item) << "." << field << "=" << value << "\n";
  world.written.insert(value);
}

void RandomStep(World& world) {
  size_t node_idx = *rc::gen::inRange<size_t>(0, world.nodes.size());
  Node& node = *world.nodes[node_idx];
  node.clock.Advance(*rc::gen::inRange<uint64_t>(0, 3000));
  int op = *rc::gen::inRange(0, 100);
  if (op < 15 || world.items.empty()) {  // create a record
    ItemId item = ItemId::Generate(node.clock, node.random);
    world.items.push_back(item);
    RC_LOG() << "create item" << world.items.size() - 1 << " at " << node_idx << "\n";
    Write(world, node, item, kFields[0]);
    if (*rc::gen::arbitrary<bool>()) Write(world, node, item, kFields[1]);
  } else if (op < 45) {  // edit a field of a record this replica holds
    ItemId item = *rc::gen::elementOf(world.items);
    if (node.provider.Get(item) == nullptr) return;
    std::string field = *rc::gen::elementOf(kFields);
    RC_LOG() << "edit " << ItemName(world, item) << "." << field << " at " << node_idx << "\n";
    Write(world, node, item, field);
  } else if (op < 53) {  // delete a record
    ItemId item = *rc::gen::elementOf(world.items);
    const Record* record = node.provider.Get(item);
    if (record == nullptr) return;
    for (const auto& [field, value] : *record) world.overwritten_knowingly.insert(value);
    RC_LOG() << "erase " << ItemName(world, item) << " at " << node_idx << "\n";
    node.provider.Erase(item);
  } else if (op < 57) {  // forget old tombstones
    auto forgotten = node.replica->ForgetTombstones(node.clock.NowMillis());
    RC_ASSERT(forgotten.ok());
    RC_LOG() << "forget at " << node_idx << ": " << *forgotten << "\n";
  } else {  // a session between two replicas, maybe interrupted
    size_t other_idx = *rc::gen::inRange<size_t>(0, world.nodes.size());
    if (other_idx == node_idx) return;
    Node& other = *world.nodes[other_idx];
    SyncOptions options;
    options.batch_size = *rc::gen::element<size_t>(1, 2, 3, 10, 1000);
    options.direction =
        *rc::gen::element(SyncDirection::kTwoWay, SyncDirection::kAToB, SyncDirection::kBToA);
    int interruption = *rc::gen::inRange(0, 10);
    int batches = 0;
    int cancel_at = *rc::gen::inRange(0, 4);
    if (interruption == 0) options.should_cancel = [&] { return batches++ >= cancel_at; };
    Node& crashing = *rc::gen::arbitrary<bool>() ? node : other;
    if (interruption == 1) crashing.store->FailCommitAfter(*rc::gen::inRange(0, 4));
    auto result = Synchronize(*node.replica, *other.replica, options);
    RC_LOG() << "sync " << node_idx << " " << other_idx
             << " dir=" << static_cast<int>(options.direction) << " batch=" << options.batch_size
             << " interruption=" << interruption
             << " crashing=" << (&crashing == &node ? node_idx : other_idx) << " -> "
             << (result.ok() ? (result->cancelled ? "cancelled" : "ok")
                             : result.status().ToString())
             << "\n";
    // Only an injected crash may fail a session.
    if (!result.ok()) RC_ASSERT(interruption == 1);
    if (result.ok()) RC_ASSERT(result->a_to_b.errors.empty() && result->b_to_a.errors.empty());
    crashing.store->Disarm();
  }
}

void CheckConvergence(World& world) {
  // A full round: every pair, until nothing changes (a bounded number of times).
  for (int round = 0; round < 4; ++round) {
    for (size_t a = 0; a < world.nodes.size(); ++a) {
      for (size_t b = a + 1; b < world.nodes.size(); ++b) {
        auto result = Synchronize(*world.nodes[a]->replica, *world.nodes[b]->replica);
        RC_ASSERT(result.ok());
      }
    }
  }
  const auto& first = world.nodes[0]->provider.records();
  std::set<std::string> present;
  for (const auto& [item, record] : first) {
    for (const auto& [field, value] : record) present.insert(value);
  }
  std::set<std::string> preserved;
  for (const auto& node : world.nodes) {
    if (node->provider.records() != first) {
      for (size_t idx = 0; idx < world.nodes.size(); ++idx) {
        RC_LOG() << "replica " << idx << ":";
        for (const auto& [item, record] : world.nodes[idx]->provider.records()) {
          RC_LOG() << " " << ItemName(world, item) << "{";
          for (const auto& [field, value] : record) RC_LOG() << field << "=" << value << " ";
          RC_LOG() << "}";
        }
        RC_LOG() << "\n  knowledge " << world.nodes[idx]->replica->state().knowledge.ToString()
                 << "\n";
        for (const ItemId& item : world.items) {
          auto meta = world.nodes[idx]->store->GetItem(item);
          if (!meta.ok() || !meta->has_value()) continue;
          const ItemMetadata& m = **meta;
          RC_LOG() << "  " << ItemName(world, item) << " created=" << m.created.ToString()
                   << " updated=" << m.updated.ToString() << (m.tombstone ? " tombstone" : "");
          for (const UnitVersion& u : m.units)
            RC_LOG() << " u" << u.unit % 1000 << "=" << u.version.ToString();
          RC_LOG() << "\n";
        }
      }
    }
    RC_ASSERT(node->provider.records() == first);
    RC_ASSERT(node->replica->state().knowledge.IsPlainVector());
    auto conflicts = node->store->ListConflicts();
    RC_ASSERT(conflicts.ok());
    for (const ConflictRecord& conflict : *conflicts) {
      size_t nul = conflict.loser_data.find('\0');
      if (nul != std::string::npos) preserved.insert(conflict.loser_data.substr(nul + 1));
    }
  }
  for (const std::string& value : world.written) {
    bool accounted =
        present.count(value) || preserved.count(value) || world.overwritten_knowingly.count(value);
    if (!accounted) RC_LOG() << "lost value " << value << "\n";
    RC_ASSERT(accounted);
  }
}

void RunProperty(bool sqlite, int max_steps) {
  World world;
  AddNodes(world, *rc::gen::inRange<size_t>(2, 9), sqlite);
  int steps = *rc::gen::inRange(1, max_steps);
  for (int step = 0; step < steps; ++step) RandomStep(world);
  CheckConvergence(world);
}

RC_GTEST_PROP(ConvergenceProperty, MemoryStoresConvergeAndLoseNothing, ()) {
  RunProperty(/*sqlite=*/false, 80);
}

RC_GTEST_PROP(ConvergenceProperty, SqliteStoresConvergeAndLoseNothing, ()) {
  RunProperty(/*sqlite=*/true, 40);
}

}  // namespace
}  // namespace meshsync
