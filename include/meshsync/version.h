// Version: "changed by replica R at tick t", the unit of causality.
//
// Versions name their replica by a ReplicaKey local to the metadata that holds
// them; ReplicaKeyMap translates keys to ReplicaIds and KeyTranslator (in
// knowledge.h) maps one replica's keys onto another's. A tick of 0 means "no
// version". Plain value type.
#ifndef MESHSYNC_VERSION_H_
#define MESHSYNC_VERSION_H_

#include <compare>
#include <optional>
#include <string>
#include <vector>

#include "meshsync/ids.h"

namespace meshsync {

struct Version {
  ReplicaKey replica = 0;
  Tick tick = 0;

  bool IsNull() const { return tick == 0; }
  friend bool operator==(const Version&, const Version&) = default;
  std::string ToString() const;  // "r3@1234"
};

// Replica ids by key for one replica's metadata; key 0 is the replica itself.
// Keys are dense and never reused, so they can be stored in item metadata.
// Thread-compatible.
class ReplicaKeyMap {
 public:
  ReplicaKeyMap() = default;
  explicit ReplicaKeyMap(ReplicaId self) : ids_{self} {}
  // Rebuilds a persisted map. REQUIRES: no duplicate ids.
  explicit ReplicaKeyMap(std::vector<ReplicaId> ids) : ids_(std::move(ids)) {}

  // The key of `id`, adding it when it is new.
  ReplicaKey KeyFor(const ReplicaId& id);
  std::optional<ReplicaKey> Find(const ReplicaId& id) const;
  // REQUIRES: key < size().
  const ReplicaId& IdOf(ReplicaKey key) const { return ids_[key]; }
  bool Has(ReplicaKey key) const { return key < ids_.size(); }
  size_t size() const { return ids_.size(); }
  const std::vector<ReplicaId>& ids() const { return ids_; }

 private:
  std::vector<ReplicaId> ids_;
};

// The deterministic winner between two concurrent versions: the higher tick,
// then the higher replica id. Every replica ranks the same pair the same way.
// Returns true when `a` wins over `b`.
bool VersionWins(const Version& a, const ReplicaId& a_replica, const Version& b,
                 const ReplicaId& b_replica);

}  // namespace meshsync

#endif  // MESHSYNC_VERSION_H_
