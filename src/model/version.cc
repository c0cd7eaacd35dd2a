#include "meshsync/version.h"

namespace meshsync {

std::string Version::ToString() const {
  return "r" + std::to_string(replica) + "@" + std::to_string(tick);
}

ReplicaKey ReplicaKeyMap::KeyFor(const ReplicaId& id) {
  if (auto key = Find(id)) return *key;
  ids_.push_back(id);
  return static_cast<ReplicaKey>(ids_.size() - 1);
}

std::optional<ReplicaKey> ReplicaKeyMap::Find(const ReplicaId& id) const {
  // Key maps hold one entry per replica that ever wrote to the scope: a
  // handful, so a linear scan beats a hash map here.
  for (size_t key = 0; key < ids_.size(); ++key) {
    if (ids_[key] == id) return static_cast<ReplicaKey>(key);
  }
  return std::nullopt;
}

bool VersionWins(const Version& a, const ReplicaId& a_replica, const Version& b,
                 const ReplicaId& b_replica) {
  if (a.tick != b.tick) return a.tick > b.tick;
  return a_replica > b_replica;
}

}  // namespace meshsync
