// A node's configuration: HOME/config.toml, edited by the CLI.
//
//   [node]
//   name = "laptop"                  # shown to peers
//   listen = "0.0.0.0:22000"         # where peers connect
//   api = "127.0.0.1:22001"          # the REST/event API (loopback only)
//   api_key = "..."                  # made on first start
//   hub = false                      # relays between its peers
//
//   [[peer]]
//   id = "MFZWI3D-..."               # device id, as `meshsync id` prints it
//   name = "phone"
//   address = "192.168.1.7:22000"    # or "dynamic": the peer connects to us
//
//   [[folder]]
//   id = "photos"                    # the same on every device that shares it
//   path = "/home/me/Photos"
//   shared_with = ["MFZWI3D-...", ...]
//
// Folder invitations that arrived from peers but are not configured here
// are kept apart, in HOME/pending.toml, which only the daemon writes.
#ifndef MESHSYNC_NODE_CONFIG_H_
#define MESHSYNC_NODE_CONFIG_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/status.h"
#include "node/identity.h"

namespace meshsync::node {

struct PeerConfig {
  DeviceId id;
  std::string name;
  std::string address;  // host:port, or "dynamic"
};

struct FolderConfig {
  std::string id;
  std::string path;
  std::vector<DeviceId> shared_with;
};

struct Config {
  std::string name;
  std::string listen = "0.0.0.0:22000";
  std::string api = "127.0.0.1:22001";
  std::string api_key;
  bool hub = false;
  std::vector<PeerConfig> peers;
  std::vector<FolderConfig> folders;

  const PeerConfig* FindPeer(const DeviceId& id) const;
  const FolderConfig* FindFolder(const std::string& id) const;
  FolderConfig* FindFolder(const std::string& id);
  // Whether folder `folder` is shared with `device`.
  bool SharedWith(const FolderConfig& folder, const DeviceId& device) const;

  // The edits `meshsync peer` and `meshsync folder` make, here or in the
  // daemon (through its API) when one runs on the home. Each checks its
  // input, changes nothing on an error, and returns what it did, as the
  // CLI prints it.
  //
  // Adds a peer, or updates its address (and name, if one is given).
  // `self` is this node's id, which is refused.
  Result<std::string> AddPeer(PeerConfig peer, const DeviceId& self);
  // Removes a peer and unshares every folder from it.
  Result<std::string> RemovePeer(const DeviceId& id);
  // `path` must be absolute and resolved (realpath); it may not overlap
  // another folder.
  Result<std::string> AddFolder(const std::string& id, const std::string& path);
  Result<std::string> ShareFolder(const std::string& folder, const DeviceId& device, bool share);
  // The folder's files and metadata are left in place.
  Result<std::string> RemoveFolder(const std::string& id);

  // Reads `path`; a missing file is an empty configuration. A syntax error
  // or a bad value is kInvalidArgument naming the file and line.
  static Result<Config> Load(const std::string& path);
  // Writes atomically (a temporary file renamed over the old one).
  Status Save(const std::string& path) const;
};

// A folder a peer offered that is not configured here.
struct PendingFolder {
  std::string folder;
  DeviceId device;
  std::string device_name;
  uint64_t offered_millis = 0;
};

Result<std::vector<PendingFolder>> LoadPending(const std::string& path);
Status SavePending(const std::string& path, const std::vector<PendingFolder>& pending);

// Checks a host:port address; kInvalidArgument with the reason.
Status CheckAddress(const std::string& address);
// Splits a checked address.
void SplitAddress(const std::string& address, std::string& host, std::string& port);

// The default home: $XDG_CONFIG_HOME/meshsync, else ~/.config/meshsync.
std::string DefaultHome();

// A folder id as a file name under the home (ids may hold anything a file
// name may not): its bytes in hex.
std::string FolderFileName(std::string_view folder);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_CONFIG_H_
