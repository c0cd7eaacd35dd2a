#include "files/key_index.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace meshsync::files {
namespace {

TEST(KeyIndex, FindsWhatWasInsertedAndRefusesADuplicateKey) {
  int a = 1, b = 2;
  KeyIndex<int> index;
  EXPECT_EQ(index.Find(7), nullptr);
  EXPECT_TRUE(index.Insert(7, &a));
  EXPECT_FALSE(index.Insert(7, &b));
  EXPECT_EQ(index.Find(7), &a);
  EXPECT_EQ(index.Find(8), nullptr);
  EXPECT_EQ(index.size(), 1u);
  index.Erase(8);  // absent: nothing happens
  index.Erase(7);
  EXPECT_EQ(index.Find(7), nullptr);
  EXPECT_EQ(index.size(), 0u);
}

// Random inserts and erasures against std::map, with keys drawn from a
// small range so that runs of probes form, wrap around the end of the
// table and are cut by erasures.
TEST(KeyIndex, AgreesWithAMapThroughRandomInsertsAndErasures) {
  std::vector<int> values(512);
  std::map<uint64_t, int*> model;
  KeyIndex<int> index;
  std::mt19937_64 random(42);
  for (int step = 0; step < 200'000; ++step) {
    uint64_t key = random() % 512;
    if (random() % 3 == 0) {
      index.Erase(key);
      model.erase(key);
    } else {
      int* value = &values[key];
      EXPECT_EQ(index.Insert(key, value), model.emplace(key, value).second);
    }
    if (step % 997 == 0) {
      ASSERT_EQ(index.size(), model.size());
      for (uint64_t k = 0; k < 512; ++k) {
        auto it = model.find(k);
        ASSERT_EQ(index.Find(k), it == model.end() ? nullptr : it->second) << "key " << k;
      }
    }
  }
}

TEST(KeyIndex, KeepsItsEntriesAcrossGrowth) {
  std::vector<int> values(10'000);
  KeyIndex<int> index;
  index.Reserve(10);
  for (uint64_t k = 0; k < values.size(); ++k) ASSERT_TRUE(index.Insert(k * 0x10001, &values[k]));
  for (uint64_t k = 0; k < values.size(); ++k) ASSERT_EQ(index.Find(k * 0x10001), &values[k]);
  index.Clear();
  EXPECT_EQ(index.Find(0), nullptr);
  EXPECT_EQ(index.size(), 0u);
}

}  // namespace
}  // namespace meshsync::files
