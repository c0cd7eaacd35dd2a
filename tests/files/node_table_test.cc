#include "files/node_table.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>

namespace meshsync::files {
namespace {

struct Entry {
  std::string name;  // owns memory: leaks and double frees show under ASan
  ItemId id;
};

ItemId Id(uint64_t hi, uint64_t lo) { return ItemId(hi, lo); }

TEST(NodeTable, FindsWhatWasInsertedAndKeepsTheFirstOfAnId) {
  NodeTable<Entry> table;
  EXPECT_EQ(table.Find(Id(1, 2)), nullptr);
  auto [a, added] = table.Insert(Id(1, 2), Entry{"a", {}});
  ASSERT_TRUE(added);
  EXPECT_EQ(a->id, Id(1, 2));  // the table sets the id
  auto [again, added_again] = table.Insert(Id(1, 2), Entry{"b", {}});
  EXPECT_FALSE(added_again);
  EXPECT_EQ(again, a);
  EXPECT_EQ(a->name, "a");
  EXPECT_EQ(table.Find(Id(1, 2)), a);
  EXPECT_EQ(&table.At(Id(1, 2)), a);
  EXPECT_EQ(table.Find(Id(2, 1)), nullptr);
  EXPECT_TRUE(table.Contains(Id(1, 2)));
  EXPECT_EQ(table.size(), 1u);
  table.Erase(Id(2, 1));  // absent: nothing happens
  table.Erase(Id(1, 2));
  EXPECT_EQ(table.Find(Id(1, 2)), nullptr);
  EXPECT_TRUE(table.empty());
}

// Ids that share the 32 bits a slot keeps, and the bits that choose the
// slot, are told apart by the entry's id.
TEST(NodeTable, TellsApartIdsWhoseHashesCollide) {
  NodeTable<Entry> table;
  // The table hashes an id as hi ^ lo * K: these all hash to 7.
  std::vector<ItemId> ids;
  for (uint64_t lo = 1; lo <= 50; ++lo) ids.push_back(Id(7 ^ (lo * 0x9E3779B97F4A7C15ull), lo));
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(table.Insert(ids[i], Entry{std::to_string(i), {}}).second);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_NE(table.Find(ids[i]), nullptr);
    EXPECT_EQ(table.Find(ids[i])->name, std::to_string(i));
  }
  for (size_t i = 0; i < ids.size(); i += 2) table.Erase(ids[i]);
  for (size_t i = 0; i < ids.size(); ++i) {
    const Entry* found = table.Find(ids[i]);
    if (i % 2 == 0) {
      EXPECT_EQ(found, nullptr) << i;
    } else {
      ASSERT_NE(found, nullptr) << i;
      EXPECT_EQ(found->name, std::to_string(i));
    }
  }
}

// Random inserts and erasures against std::map, with ids drawn from a small
// set so that runs of probes form, wrap around the end of the lookup array
// and are cut by erasures; entries must stay where they were put.
TEST(NodeTable, AgreesWithAMapThroughRandomInsertsAndErasures) {
  NodeTable<Entry> table;
  std::map<ItemId, std::pair<std::string, const Entry*>> model;
  std::mt19937_64 random(42);
  for (int step = 0; step < 200'000; ++step) {
    ItemId id = Id(random() % 4, random() % 200);
    if (random() % 3 == 0) {
      table.Erase(id);
      model.erase(id);
    } else {
      std::string name = std::to_string(step);
      auto [entry, added] = table.Insert(id, Entry{name, {}});
      auto [it, model_added] = model.emplace(id, std::make_pair(name, entry));
      ASSERT_EQ(added, model_added);
      ASSERT_EQ(entry, it->second.second);
    }
    if (step % 997 == 0) {
      ASSERT_EQ(table.size(), model.size());
      for (const auto& [key, value] : model) {
        const Entry* found = table.Find(key);
        ASSERT_EQ(found, value.second);  // the same address throughout
        ASSERT_EQ(found->name, value.first);
      }
      std::set<ItemId> seen;
      for (const Entry& entry : table) {
        ASSERT_TRUE(seen.insert(entry.id).second) << "visited twice";
        ASSERT_EQ(model.count(entry.id), 1u);
      }
      ASSERT_EQ(seen.size(), model.size());
    }
  }
}

TEST(NodeTable, KeepsItsEntriesAcrossGrowthAndClear) {
  NodeTable<Entry> table;
  table.Reserve(10);
  std::vector<const Entry*> where;
  for (uint64_t k = 0; k < 10'000; ++k) {
    where.push_back(table.Insert(Id(k, k * 31), Entry{std::string(20, 'x'), {}}).first);
  }
  for (uint64_t k = 0; k < 10'000; ++k) ASSERT_EQ(table.Find(Id(k, k * 31)), where[k]);
  table.Clear();
  EXPECT_EQ(table.Find(Id(0, 0)), nullptr);
  EXPECT_EQ(table.begin(), table.end());
  EXPECT_TRUE(table.Insert(Id(0, 0), Entry{}).second);
}

// Erasing the entry at hand while iterating visits every other entry once.
TEST(NodeTable, IterationToleratesErasingTheEntryAtHand) {
  NodeTable<Entry> table;
  for (uint64_t k = 0; k < 1'000; ++k) table.Insert(Id(0, k), Entry{std::to_string(k), {}});
  size_t visited = 0;
  for (Entry& entry : table) {
    ++visited;
    if (entry.id.lo % 2 == 0) table.Erase(entry.id);
  }
  EXPECT_EQ(visited, 1'000u);
  EXPECT_EQ(table.size(), 500u);
  // Erased entries' places are used again.
  for (uint64_t k = 0; k < 1'000; k += 2) table.Insert(Id(1, k), Entry{});
  EXPECT_EQ(table.size(), 1'000u);
  size_t counted = 0;
  for (const Entry& entry : std::as_const(table)) counted += entry.id.hi <= 1 ? 1 : 0;
  EXPECT_EQ(counted, 1'000u);
}

}  // namespace
}  // namespace meshsync::files
