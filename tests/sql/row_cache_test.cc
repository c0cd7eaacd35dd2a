#include "sql/row_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace meshsync::sql {
namespace {

// What Get's views show, as strings.
std::vector<std::string> Strings(const std::vector<std::string_view>& views) {
  return {views.begin(), views.end()};
}

std::vector<std::string> Values(int n) {
  return {std::to_string(n), std::string("v\0w", 3) + std::to_string(n), "",
          std::string(n % 50, 'x')};
}

TEST(RowCacheTest, KeepsRowsByKeyForTheStateTheyWereScannedWith) {
  RowCache cache(size_t{1} << 20);
  ASSERT_TRUE(cache.Put("t|v1", "state1", Values(1)));
  ASSERT_TRUE(cache.Put("t|v2", "state2", Values(2)));
  std::vector<std::string_view> got;
  ASSERT_TRUE(cache.Get("t|v1", "state1", got));
  EXPECT_EQ(Strings(got), Values(1));
  ASSERT_TRUE(cache.Get("t|v2", "state2", got));
  EXPECT_EQ(Strings(got), Values(2));
  // Another state: the row changed since, its values are not these.
  EXPECT_FALSE(cache.Get("t|v1", "state2", got));
  EXPECT_FALSE(cache.Get("t|v3", "state1", got));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(RowCacheTest, APutReplacesAndAnEraseForgets) {
  RowCache cache(size_t{1} << 20);
  ASSERT_TRUE(cache.Put("k", "old", Values(1)));
  ASSERT_TRUE(cache.Put("k", "new", Values(2)));
  std::vector<std::string_view> got;
  EXPECT_FALSE(cache.Get("k", "old", got));
  ASSERT_TRUE(cache.Get("k", "new", got));
  EXPECT_EQ(Strings(got), Values(2));
  EXPECT_EQ(cache.size(), 1u);
  cache.Erase("k");
  cache.Erase("never there");
  EXPECT_FALSE(cache.Get("k", "new", got));
  EXPECT_EQ(cache.size(), 0u);
  // Kept again after an erase.
  ASSERT_TRUE(cache.Put("k", "again", {}));
  ASSERT_TRUE(cache.Get("k", "again", got));
  EXPECT_TRUE(got.empty());
}

// Many keys, erased and put again, through the index's growth: the cache
// answers as a map does.
TEST(RowCacheTest, AgreesWithAMapThroughGrowthAndErasures) {
  RowCache cache(size_t{64} << 20);
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> model;
  for (int i = 0; i < 20000; ++i) {
    std::string key = "t|v" + std::to_string(i * 7919 % 5000);
    if (i % 5 == 4) {
      cache.Erase(key);
      model.erase(key);
    } else {
      std::string state = "s" + std::to_string(i);
      ASSERT_TRUE(cache.Put(key, state, Values(i)));
      model[key] = {state, Values(i)};
    }
  }
  EXPECT_EQ(cache.size(), model.size());
  std::vector<std::string_view> got;
  for (int k = 0; k < 5000; ++k) {
    std::string key = "t|v" + std::to_string(k);
    auto it = model.find(key);
    if (it == model.end()) {
      EXPECT_FALSE(cache.Get(key, "s", got)) << key;
      continue;
    }
    ASSERT_TRUE(cache.Get(key, it->second.first, got)) << key;
    EXPECT_EQ(Strings(got), it->second.second) << key;
  }
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.Get("t|v1", "s1", got));
}

// Get's views point into the cache: they must outlive later puts (new
// blocks, the index growing), a put that replaces the row, and erasures.
TEST(RowCacheTest, ViewsStayValidUntilClear) {
  RowCache cache(size_t{64} << 20);
  ASSERT_TRUE(cache.Put("k", "s", Values(7)));
  std::vector<std::string_view> views;
  ASSERT_TRUE(cache.Get("k", "s", views));
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(cache.Put("t|v" + std::to_string(i), "s", Values(i)));
  }
  ASSERT_TRUE(cache.Put("k", "other", Values(8)));
  cache.Erase("k");
  EXPECT_EQ(Strings(views), Values(7));
}

TEST(RowCacheTest, RefusesRowsOnceFull) {
  RowCache cache(size_t{2} << 20);
  std::vector<std::string> big = {std::string(100'000, 'b')};
  int kept = 0;
  while (cache.Put("k" + std::to_string(kept), "s", big)) ++kept;
  // About 2 MiB of 100 kB rows, and nothing more.
  EXPECT_GE(kept, 10);
  EXPECT_LE(kept, 21);
  EXPECT_LE(cache.bytes(), (size_t{2} << 20) + 4096);
  std::vector<std::string_view> got;
  ASSERT_TRUE(cache.Get("k0", "s", got));
  EXPECT_EQ(Strings(got), big);
  EXPECT_FALSE(cache.Get("k" + std::to_string(kept), "s", got));
}

}  // namespace
}  // namespace meshsync::sql
