#include "meshsync/knowledge.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <array>
#include <map>

namespace meshsync {
namespace {

ItemId Item(uint64_t n) { return ItemId(0, n); }
Version V(ReplicaKey r, Tick t) { return Version{r, t}; }

ReplicaKeyMap ThreeReplicas() {
  ReplicaKeyMap keys(ReplicaId(Id128{0, 30}));
  keys.KeyFor(ReplicaId(Id128{0, 10}));
  keys.KeyFor(ReplicaId(Id128{0, 20}));
  return keys;
}

TEST(ClockVectorTest, ContainsOnlyTicksUpToTheEntry) {
  ClockVector v{{0, 5}, {2, 7}};
  EXPECT_TRUE(v.Contains(V(0, 5)));
  EXPECT_TRUE(v.Contains(V(0, 1)));
  EXPECT_FALSE(v.Contains(V(0, 6)));
  EXPECT_FALSE(v.Contains(V(1, 1)));
  EXPECT_FALSE(v.Contains(V(0, 0))) << "tick 0 is no version and is never contained";
}

TEST(ClockVectorTest, MaxMinAndDominance) {
  ClockVector a{{0, 5}, {1, 2}};
  ClockVector b{{1, 9}, {2, 3}};
  EXPECT_EQ(ClockVector::Max(a, b), (ClockVector{{0, 5}, {1, 9}, {2, 3}}));
  EXPECT_EQ(ClockVector::Min(a, b), (ClockVector{{1, 2}}));
  EXPECT_TRUE(ClockVector::Max(a, b).Dominates(a));
  EXPECT_FALSE(a.Dominates(b));
  EXPECT_TRUE(a.Dominates(ClockVector()));
}

TEST(KnowledgeTest, EmptyKnowsNothing) {
  Knowledge k;
  EXPECT_TRUE(k.IsEmpty());
  EXPECT_FALSE(k.Contains(Item(1), V(0, 1)));
}

TEST(KnowledgeTest, ProjectionMakesARangeExceptionAndUnionFoldsItBack) {
  Knowledge source(ClockVector{{0, 10}, {1, 4}});
  Knowledge dest(ClockVector{{1, 4}});
  Knowledge learned = source.ProjectOnto(Item(100), Item(199));
  dest.UnionWith(learned);
  ASSERT_EQ(dest.ranges().size(), 1u);
  EXPECT_TRUE(dest.Contains(Item(150), V(0, 10)));
  EXPECT_FALSE(dest.Contains(Item(99), V(0, 1)));
  EXPECT_FALSE(dest.Contains(Item(200), V(0, 1)));

  // Learning the rest of the id space, in two pieces, folds to one vector.
  dest.UnionWith(source.ProjectOnto(ItemId::Min(), Item(99)));
  dest.UnionWith(source.ProjectOnto(Item(200), ItemId::Max()));
  EXPECT_TRUE(dest.IsPlainVector()) << dest.ToString();
  EXPECT_EQ(dest.scope(), source.scope());
}

TEST(KnowledgeTest, ExcludedUnitIsUnknownWhileTheRestOfTheItemIsKnown) {
  Knowledge k(ClockVector{{0, 10}});
  Knowledge excluded = k.Exclude(Item(5), 3);
  EXPECT_FALSE(excluded.Contains(Item(5), 3, V(0, 1)));
  EXPECT_TRUE(excluded.Contains(Item(5), 4, V(0, 10)));
  EXPECT_TRUE(excluded.Contains(Item(5), V(0, 10)));
  EXPECT_TRUE(k.Contains(excluded));
  EXPECT_FALSE(excluded.Contains(k));
  // Learning that unit again removes the exception.
  EXPECT_EQ(Knowledge::Union(excluded, k.ProjectOnto(Item(5), 3)), k);
}

TEST(KnowledgeTest, ExcludeItemLeavesNeighboursKnown) {
  Knowledge k(ClockVector{{0, 10}});
  Knowledge excluded = k.Exclude(Item(7));
  EXPECT_FALSE(excluded.Contains(Item(7), V(0, 1)));
  EXPECT_TRUE(excluded.Contains(Item(6), V(0, 10)));
  EXPECT_TRUE(excluded.Contains(Item(8), V(0, 10)));
  EXPECT_TRUE(excluded.Contains(ItemId::Max(), V(0, 10)));
}

TEST(KnowledgeTest, RangesAtTheEdgesOfTheIdSpace) {
  Knowledge k(ClockVector{{0, 1}});
  Knowledge high = Knowledge(ClockVector{{0, 9}}).ProjectOnto(ItemId::Max());
  Knowledge low = Knowledge(ClockVector{{0, 9}}).ProjectOnto(ItemId::Min());
  k.UnionWith(high);
  k.UnionWith(low);
  EXPECT_TRUE(k.Contains(ItemId::Max(), V(0, 9)));
  EXPECT_TRUE(k.Contains(ItemId::Min(), V(0, 9)));
  EXPECT_FALSE(k.Contains(Item(1), V(0, 2)));
  EXPECT_EQ(k.ranges().size(), 2u);
}

TEST(KnowledgeTest, RaiseEverywhereRaisesExceptionsToo) {
  Knowledge k = Knowledge(ClockVector{{1, 3}}).ProjectOnto(Item(1), Item(2));
  k.RaiseEverywhere(V(0, 50));
  EXPECT_TRUE(k.Contains(Item(1), V(0, 50)));
  EXPECT_TRUE(k.Contains(Item(9), V(0, 50)));
}

TEST(KnowledgeTest, MapKeysDropsUnknownReplicas) {
  Knowledge k(ClockVector{{0, 5}, {1, 6}, {2, 7}});
  Knowledge mapped = k.MapKeys([](ReplicaKey key) -> std::optional<ReplicaKey> {
    if (key == 1) return std::nullopt;
    return key + 10;
  });
  EXPECT_EQ(mapped.scope(), (ClockVector{{10, 5}, {12, 7}}));
}

TEST(KnowledgeTest, TranslatorMapsByReplicaId) {
  ReplicaKeyMap a = ThreeReplicas();
  ReplicaKeyMap b(ReplicaId(Id128{0, 20}));  // b's own id is a's key 2
  KeyTranslator a_to_b = KeyTranslator::Extending(a, b);
  EXPECT_EQ(a_to_b.Translate(V(2, 9)), V(0, 9));
  EXPECT_EQ(b.size(), 3u);
  ReplicaKeyMap c(ReplicaId(Id128{0, 99}));
  KeyTranslator a_to_c = KeyTranslator::Restricting(a, c);
  EXPECT_TRUE(a_to_c.Translate(V(1, 4)).IsNull());
  EXPECT_EQ(c.size(), 1u);
}

TEST(KnowledgeCodecTest, RoundTripsAndIsIndependentOfKeyNumbering) {
  ReplicaKeyMap keys = ThreeReplicas();
  Knowledge k = Knowledge(ClockVector{{0, 5}, {1, 300}, {2, 70000}})
                    .Exclude(Item(4), Item(8))
                    .Exclude(Item(20), 2);
  std::string bytes = k.Encode(keys);
  ReplicaKeyMap same = ThreeReplicas();
  auto decoded = Knowledge::Decode(bytes, same);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, k);

  // Decoding into a map that numbers the replicas differently gives the same
  // knowledge in that map's keys, and re-encodes to the same bytes.
  ReplicaKeyMap other(ReplicaId(Id128{0, 10}));
  auto in_other = Knowledge::Decode(bytes, other);
  ASSERT_TRUE(in_other.ok());
  EXPECT_EQ(other.size(), 3u);
  EXPECT_EQ(in_other->Encode(other), bytes);
}

TEST(KnowledgeCodecTest, TenReplicaVectorIsSmall) {
  ReplicaKeyMap keys(ReplicaId(Id128{1, 1}));
  ClockVector v;
  for (uint64_t r = 0; r < 10; ++r) {
    v.Raise(keys.KeyFor(ReplicaId(Id128{r * 7919, r})), (uint64_t{1} << 57) + r);
  }
  std::string bytes = Knowledge(v).Encode(keys);
  EXPECT_LE(bytes.size(), 512u);
}

TEST(KnowledgeCodecTest, RejectsCorruptInput) {
  ReplicaKeyMap keys = ThreeReplicas();
  Knowledge k = Knowledge(ClockVector{{0, 5}, {1, 3}}).Exclude(Item(4), Item(8));
  std::string bytes = k.Encode(keys);

  ReplicaKeyMap fresh(ReplicaId(Id128{0, 1}));
  EXPECT_FALSE(Knowledge::Decode("", fresh).ok());
  EXPECT_FALSE(Knowledge::Decode(std::string("\x02", 1), fresh).ok()) << "unknown format";
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(Knowledge::Decode(bytes.substr(0, cut), fresh).ok()) << "truncated at " << cut;
  }
  EXPECT_FALSE(Knowledge::Decode(bytes + "x", fresh).ok()) << "trailing byte";
  EXPECT_EQ(fresh.size(), 1u) << "failed decodes must not add replicas";

  // A huge count must be rejected before anything is allocated.
  std::string huge("\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10);
  EXPECT_EQ(Knowledge::Decode(huge, fresh).status().code(), StatusCode::kInvalidArgument);
}

TEST(KnowledgeCodecTest, RejectsNonCanonicalForms) {
  // A range whose vector equals the scope is redundant.
  ReplicaKeyMap keys(ReplicaId(Id128{0, 1}));
  std::string bytes;
  bytes.push_back(1);  // format
  bytes.push_back(1);  // one replica
  bytes.append(std::string(15, '\0') + "\x01");
  bytes += std::string("\x01\x00\x05", 3);  // scope {0:5}
  bytes.push_back(1);                       // one range
  bytes.append(std::string(16, '\0'));
  bytes.append(std::string(15, '\0') + "\x09");
  bytes += std::string("\x01\x00\x05", 3);  // same vector as scope
  bytes.push_back(0);                       // no units
  auto decoded = Knowledge::Decode(bytes, keys);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("canonical"), std::string_view::npos)
      << "rejected for another reason: " << decoded.status().ToString();
}

// ---- Properties, checked against a brute-force model. ----
//
// Items 0..kItems-1 stand for themselves, item kItems stands for every id
// above (ranges in these tests end inside 0..kItems-1 or at ItemId::Max()).
constexpr uint64_t kItems = 12;
constexpr ChangeUnitId kUnits = 3;
constexpr ReplicaKey kReplicas = 3;

using Model = std::array<std::array<ClockVector, kUnits>, kItems + 1>;

ItemId ModelItem(uint64_t idx) { return idx == kItems ? ItemId::Max() : Item(idx); }

Model ModelOf(const Knowledge& k) {
  Model m;
  for (uint64_t item = 0; item <= kItems; ++item) {
    for (ChangeUnitId unit = 0; unit < kUnits; ++unit)
      m[item][unit] = k.VectorFor(ModelItem(item), unit);
  }
  return m;
}

rc::Gen<ClockVector> GenVector() {
  return rc::gen::map(
      rc::gen::container<std::vector<std::pair<ReplicaKey, Tick>>>(
          rc::gen::pair(rc::gen::inRange<ReplicaKey>(0, kReplicas), rc::gen::inRange<Tick>(1, 8))),
      [](const std::vector<std::pair<ReplicaKey, Tick>>& entries) {
        ClockVector v;
        for (auto [r, t] : entries) v.Raise(r, t);
        return v;
      });
}

// Builds knowledge through the public operations, updating the model the
// same way by brute force.
struct Built {
  Knowledge knowledge;
  Model model;
};

Built Build() {
  Built b;
  b.knowledge = Knowledge(*GenVector());
  for (auto& row : b.model) row.fill(b.knowledge.scope());
  int steps = *rc::gen::inRange(0, 6);
  for (int step = 0; step < steps; ++step) {
    int op = *rc::gen::inRange(0, 6);
    uint64_t lo = *rc::gen::inRange<uint64_t>(0, kItems);
    uint64_t hi = *rc::gen::inRange<uint64_t>(lo, kItems + 1);
    ChangeUnitId unit = *rc::gen::inRange<ChangeUnitId>(0, kUnits);
    if (op == 0) {  // union with another projected vector
      ClockVector other = *GenVector();
      b.knowledge.UnionWith(Knowledge(other).ProjectOnto(ModelItem(lo), ModelItem(hi)));
      for (uint64_t item = lo; item <= hi; ++item) {
        for (auto& v : b.model[item]) v = ClockVector::Max(v, other);
      }
    } else if (op == 1) {
      b.knowledge = b.knowledge.ProjectOnto(ModelItem(lo), ModelItem(hi));
      for (uint64_t item = 0; item <= kItems; ++item) {
        if (item < lo || item > hi) b.model[item].fill(ClockVector());
      }
    } else if (op == 2) {
      b.knowledge = b.knowledge.Exclude(ModelItem(lo), ModelItem(hi));
      for (uint64_t item = lo; item <= hi; ++item) b.model[item].fill(ClockVector());
    } else if (op == 3) {
      b.knowledge = b.knowledge.Exclude(ModelItem(lo), unit);
      b.model[lo][unit] = ClockVector();
    } else if (op == 4) {
      b.knowledge = b.knowledge.ProjectOnto(ModelItem(lo), unit);
      ClockVector keep = b.model[lo][unit];
      for (auto& row : b.model) row.fill(ClockVector());
      b.model[lo][unit] = keep;
    } else {
      Version v{*rc::gen::inRange<ReplicaKey>(0, kReplicas), *rc::gen::inRange<Tick>(1, 10)};
      b.knowledge.RaiseEverywhere(v);
      for (auto& row : b.model) {
        for (auto& vec : row) vec.Raise(v.replica, v.tick);
      }
    }
  }
  return b;
}

RC_GTEST_PROP(KnowledgeProperty, OperationsMatchTheBruteForceModel, ()) {
  Built b = Build();
  RC_ASSERT(ModelOf(b.knowledge) == b.model);
}

RC_GTEST_PROP(KnowledgeProperty, UnionIsPointwiseMaxCommutativeAndIdempotent, ()) {
  Built a = Build();
  Built b = Build();
  Knowledge u = Knowledge::Union(a.knowledge, b.knowledge);
  RC_ASSERT(u == Knowledge::Union(b.knowledge, a.knowledge));
  RC_ASSERT(Knowledge::Union(u, a.knowledge) == u);
  Model expected;
  for (uint64_t item = 0; item <= kItems; ++item) {
    for (ChangeUnitId unit = 0; unit < kUnits; ++unit) {
      expected[item][unit] = ClockVector::Max(a.model[item][unit], b.model[item][unit]);
    }
  }
  RC_ASSERT(ModelOf(u) == expected);
  RC_ASSERT(u.Contains(a.knowledge));
  RC_ASSERT(u.Contains(b.knowledge));
}

RC_GTEST_PROP(KnowledgeProperty, ContainsIsPointwiseDominance, ()) {
  Built a = Build();
  Built b = Build();
  bool dominates = true;
  for (uint64_t item = 0; item <= kItems; ++item) {
    for (ChangeUnitId unit = 0; unit < kUnits; ++unit) {
      dominates = dominates && a.model[item][unit].Dominates(b.model[item][unit]);
    }
  }
  RC_ASSERT(a.knowledge.Contains(b.knowledge) == dominates);
}

RC_GTEST_PROP(KnowledgeProperty, ProjectAndExcludePartitionKnowledge, ()) {
  Built a = Build();
  uint64_t lo = *rc::gen::inRange<uint64_t>(0, kItems);
  uint64_t hi = *rc::gen::inRange<uint64_t>(lo, kItems + 1);
  Knowledge inside = a.knowledge.ProjectOnto(ModelItem(lo), ModelItem(hi));
  Knowledge outside = a.knowledge.Exclude(ModelItem(lo), ModelItem(hi));
  RC_ASSERT(Knowledge::Union(inside, outside) == a.knowledge);
}

RC_GTEST_PROP(KnowledgeProperty, EncodingRoundTripsCanonically, ()) {
  Built a = Build();
  ReplicaKeyMap keys(ReplicaId(Id128{5, 5}));
  keys.KeyFor(ReplicaId(Id128{1, 1}));
  keys.KeyFor(ReplicaId(Id128{9, 9}));
  std::string bytes = a.knowledge.Encode(keys);
  ReplicaKeyMap same(keys.ids());
  auto decoded = Knowledge::Decode(bytes, same);
  RC_ASSERT(decoded.ok());
  RC_ASSERT(*decoded == a.knowledge);
  RC_ASSERT(decoded->Encode(same) == bytes);
  // Flipping any one byte never crashes, and what still decodes re-encodes
  // to exactly the altered bytes (the form stays canonical).
  size_t pos = *rc::gen::inRange<size_t>(0, bytes.size());
  std::string altered = bytes;
  altered[pos] = static_cast<char>(altered[pos] ^ (1 + *rc::gen::inRange(0, 255)));
  ReplicaKeyMap fresh(keys.ids());
  auto maybe = Knowledge::Decode(altered, fresh);
  if (maybe.ok()) RC_ASSERT(maybe->Encode(fresh) == altered);
}

}  // namespace
}  // namespace meshsync
