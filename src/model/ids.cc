#include "meshsync/ids.h"

#include "meshsync/env.h"

namespace meshsync {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string Id128::ToHex() const {
  std::string out(32, '0');
  for (int nibble = 0; nibble < 16; ++nibble) {
    out[15 - nibble] = kHexDigits[(hi >> (4 * nibble)) & 0xf];
    out[31 - nibble] = kHexDigits[(lo >> (4 * nibble)) & 0xf];
  }
  return out;
}

Result<Id128> Id128::FromHex(std::string_view hex) {
  if (hex.size() != 32) return InvalidArgumentError("an id is 32 hex digits");
  Id128 id;
  for (size_t pos = 0; pos < 32; ++pos) {
    int value = HexValue(hex[pos]);
    if (value < 0) return InvalidArgumentError("an id holds only hex digits");
    uint64_t& half = pos < 16 ? id.hi : id.lo;
    half = (half << 4) | static_cast<uint64_t>(value);
  }
  return id;
}

void Id128::ToBytes(uint8_t out[16]) const {
  for (int byte = 0; byte < 8; ++byte) {
    out[byte] = static_cast<uint8_t>(hi >> (56 - 8 * byte));
    out[8 + byte] = static_cast<uint8_t>(lo >> (56 - 8 * byte));
  }
}

Id128 Id128::FromBytes(const uint8_t in[16]) {
  Id128 id;
  for (int byte = 0; byte < 8; ++byte) {
    id.hi = (id.hi << 8) | in[byte];
    id.lo = (id.lo << 8) | in[8 + byte];
  }
  return id;
}

ReplicaId ReplicaId::Generate(Random& random) {
  return ReplicaId(Id128{random.Next64(), random.Next64()});
}

ItemId ItemId::Generate(Clock& clock, Random& random) {
  constexpr uint64_t kMillisMask = (uint64_t{1} << 48) - 1;
  uint64_t millis = clock.NowMillis() & kMillisMask;
  uint64_t high_random = random.Next64() & 0xffff;
  return ItemId((millis << 16) | high_random, random.Next64());
}

ChangeUnitId ChangeUnitIdFromName(std::string_view name) {
  uint32_t hash = 2166136261u;
  for (char c : name) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 16777619u;
  }
  return hash;
}

}  // namespace meshsync
