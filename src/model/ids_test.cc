#include "meshsync/ids.h"

#include <gtest/gtest.h>

#include <cstring>

#include "meshsync/env.h"
#include "testing/fakes.h"

namespace meshsync {
namespace {

TEST(IdsTest, HexRoundTripAndValidation) {
  Id128 id{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(id.ToHex(), "0123456789abcdeffedcba9876543210");
  auto parsed = Id128::FromHex(id.ToHex());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, id);
  EXPECT_FALSE(Id128::FromHex("0123").ok());
  EXPECT_FALSE(Id128::FromHex("g123456789abcdeffedcba9876543210").ok());
}

TEST(IdsTest, BytesAreBigEndianSoByteOrderIsIdOrder) {
  Id128 small{1, 0xff};
  Id128 big{2, 0};
  uint8_t a[16];
  uint8_t b[16];
  small.ToBytes(a);
  big.ToBytes(b);
  EXPECT_LT(std::memcmp(a, b, 16), 0);
  EXPECT_EQ(Id128::FromBytes(a), small);
}

TEST(IdsTest, NewItemIdsSortByCreationTime) {
  testing::FakeClock clock;
  testing::SeededRandom random(7);
  ItemId earlier = ItemId::Generate(clock, random);
  clock.Advance(1);
  ItemId later = ItemId::Generate(clock, random);
  EXPECT_LT(earlier, later);
}

TEST(IdsTest, NextAndPrevCarryAcrossHalves) {
  ItemId id(1, UINT64_MAX);
  EXPECT_EQ(id.Next(), ItemId(2, 0));
  EXPECT_EQ(id.Next().Prev(), id);
}

TEST(HybridLogicalClockTest, NeverGoesBackwardsWhenTheWallClockDoes) {
  testing::FakeClock clock(10'000);
  HybridLogicalClock hlc(clock);
  Tick first = hlc.Next();
  clock.Set(5'000);  // wall clock jumps back
  Tick second = hlc.Next();
  EXPECT_GT(second, first);
  clock.Set(20'000);
  Tick third = hlc.Next();
  EXPECT_GT(third, second);
  EXPECT_EQ(HybridLogicalClock::MillisOf(third), 20'000u) << "ticks track real time again";
}

TEST(HybridLogicalClockTest, ObservedTicksOrderLaterLocalTicks) {
  testing::FakeClock clock(10'000);
  HybridLogicalClock hlc(clock);
  Tick remote = (uint64_t{12'000} << HybridLogicalClock::kLogicalBits) + 3;
  hlc.Observe(remote);
  EXPECT_GT(hlc.Next(), remote);
}

TEST(HybridLogicalClockTest, IgnoresPeerTicksFarInTheFuture) {
  testing::FakeClock clock(10'000);
  HybridLogicalClock hlc(clock);
  uint64_t far = 10'000 + HybridLogicalClock::kMaxForwardDriftMillis + 1;
  hlc.Observe(far << HybridLogicalClock::kLogicalBits);
  EXPECT_EQ(HybridLogicalClock::MillisOf(hlc.Next()), 10'000u);
}

}  // namespace
}  // namespace meshsync
