// Identifiers of the sync model.
//
// ReplicaId  128-bit random id of one endpoint (a folder, a table, a feed).
// ItemId     128-bit id of one synced item, stable across renames and moves.
//            Ordered: enumeration and knowledge ranges use this order. New
//            ids start with the creation time in milliseconds, so they sort
//            roughly by creation time and a replica's new items form ranges.
// ChangeUnitId  names one independently versioned field of an item (a column,
//            a contact's phone number, a file's content vs its placement).
//            Providers choose the numbering; FromName() derives a stable id
//            from a field name.
// ReplicaKey small integer naming a replica inside one replica's metadata
//            (0 is the replica itself); see ReplicaKeyMap.
//
// All types are plain values, thread-compatible.
#ifndef MESHSYNC_IDS_H_
#define MESHSYNC_IDS_H_

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "meshsync/status.h"

namespace meshsync {

class Random;
class Clock;

// A 128-bit identifier, compared as an unsigned big-endian number.
struct Id128 {
  uint64_t hi = 0;
  uint64_t lo = 0;

  constexpr auto operator<=>(const Id128&) const = default;

  // 32 lowercase hex digits.
  std::string ToHex() const;
  // Parses exactly 32 hex digits (either case).
  static Result<Id128> FromHex(std::string_view hex);

  void ToBytes(uint8_t out[16]) const;
  static Id128 FromBytes(const uint8_t in[16]);

  // The next id in order; REQUIRES: *this != Max().
  constexpr Id128 Next() const { return lo == UINT64_MAX ? Id128{hi + 1, 0} : Id128{hi, lo + 1}; }
  // The previous id in order; REQUIRES: *this != Min().
  constexpr Id128 Prev() const { return lo == 0 ? Id128{hi - 1, UINT64_MAX} : Id128{hi, lo - 1}; }
  static constexpr Id128 Min() { return Id128{0, 0}; }
  static constexpr Id128 Max() { return Id128{UINT64_MAX, UINT64_MAX}; }
};

// Distinct types so a replica id can never be passed as an item id.
struct ReplicaId : Id128 {
  constexpr ReplicaId() = default;
  constexpr explicit ReplicaId(Id128 v) : Id128(v) {}
  // 128 random bits.
  static ReplicaId Generate(Random& random);
  // The first 7 hex digits: how a replica is named to a person.
  std::string ShortName() const { return ToHex().substr(0, 7); }
};

struct ItemId : Id128 {
  constexpr ItemId() = default;
  constexpr explicit ItemId(Id128 v) : Id128(v) {}
  constexpr ItemId(uint64_t h, uint64_t l) : Id128{h, l} {}
  // 48 bits of wall-clock milliseconds, then 80 random bits.
  static ItemId Generate(Clock& clock, Random& random);
  constexpr ItemId Next() const { return ItemId(Id128::Next()); }
  constexpr ItemId Prev() const { return ItemId(Id128::Prev()); }
  static constexpr ItemId Min() { return ItemId(Id128::Min()); }
  static constexpr ItemId Max() { return ItemId(Id128::Max()); }
};

using ChangeUnitId = uint32_t;
using ReplicaKey = uint32_t;
using Tick = uint64_t;

// A stable change-unit id for a field name (32-bit FNV-1a). Names that a
// provider lists together must not collide; providers check that.
ChangeUnitId ChangeUnitIdFromName(std::string_view name);

// noexcept, so that std::unordered_map does not keep each entry's hash
// beside it (8 bytes an entry; rehashing an id costs a multiply).
struct Id128Hash {
  size_t operator()(const Id128& id) const noexcept {
    return std::hash<uint64_t>()(id.hi ^ (id.lo * 0x9E3779B97F4A7C15ull));
  }
};

}  // namespace meshsync

#endif  // MESHSYNC_IDS_H_
