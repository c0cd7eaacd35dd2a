#include "node/config.h"

#include <fcntl.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "meshsync/atomic_file.h"

namespace meshsync::node {
namespace {

Status AtLine(const std::string& path, const toml::node& node, std::string_view message) {
  return InvalidArgumentError(path + ":" + std::to_string(node.source().begin.line) + ": " +
                              std::string(message));
}

Result<std::string> GetString(const std::string& path, const toml::table& table,
                              std::string_view key, bool required) {
  const toml::node* node = table.get(key);
  if (node == nullptr) {
    if (required) return AtLine(path, table, "missing '" + std::string(key) + "'");
    return std::string();
  }
  if (!node->is_string()) {
    return AtLine(path, *node, "'" + std::string(key) + "' must be a string");
  }
  return std::string(*node->value<std::string>());
}

Result<DeviceId> GetDevice(const std::string& path, const toml::node& node) {
  if (!node.is_string()) return AtLine(path, node, "a device id must be a string");
  auto id = DeviceId::Parse(*node.value<std::string>());
  if (!id.ok()) return AtLine(path, node, id.status().message());
  return *id;
}

Result<toml::table> ParseFile(const std::string& path, bool& missing) {
  std::ifstream in(path);
  missing = !in.is_open();
  if (missing) {
    if (errno != ENOENT)
      return UnavailableError("cannot read " + path + ": " + std::strerror(errno));
    return toml::table();
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return toml::parse(text.str(), path);
  } catch (const toml::parse_error& error) {
    return InvalidArgumentError(path + ":" + std::to_string(error.source().begin.line) + ": " +
                                std::string(error.description()));
  }
}

}  // namespace

const PeerConfig* Config::FindPeer(const DeviceId& id) const {
  for (const PeerConfig& peer : peers)
    if (peer.id == id) return &peer;
  return nullptr;
}

const FolderConfig* Config::FindFolder(const std::string& id) const {
  for (const FolderConfig& folder : folders)
    if (folder.id == id) return &folder;
  return nullptr;
}

FolderConfig* Config::FindFolder(const std::string& id) {
  for (FolderConfig& folder : folders)
    if (folder.id == id) return &folder;
  return nullptr;
}

bool Config::SharedWith(const FolderConfig& folder, const DeviceId& device) const {
  for (const DeviceId& id : folder.shared_with)
    if (id == device) return FindPeer(device) != nullptr;
  return false;
}

Result<std::string> Config::AddPeer(PeerConfig peer, const DeviceId& self) {
  if (peer.id == self) return InvalidArgumentError("that is this node's own device id");
  if (peer.address != "dynamic") MESHSYNC_RETURN_IF_ERROR(CheckAddress(peer.address));
  std::string verb = "added";
  for (PeerConfig& existing : peers) {
    if (existing.id == peer.id) {
      if (peer.name.empty()) peer.name = existing.name;
      existing = peer;
      verb = "updated";
    }
  }
  if (verb == "added") peers.push_back(peer);
  return verb + " peer " + peer.id.ToString() + " at " + peer.address;
}

Result<std::string> Config::RemovePeer(const DeviceId& id) {
  size_t before = peers.size();
  std::erase_if(peers, [&](const PeerConfig& p) { return p.id == id; });
  if (peers.size() == before) return NotFoundError("no peer " + id.ToString());
  for (FolderConfig& folder : folders) std::erase(folder.shared_with, id);
  return "removed peer " + id.ToString();
}

Result<std::string> Config::AddFolder(const std::string& id, const std::string& path) {
  if (id.empty() || id.size() > 64) {
    return InvalidArgumentError("a folder id has 1 to 64 characters");
  }
  if (!path.starts_with("/")) return InvalidArgumentError(path + " is not an absolute path");
  if (FindFolder(id) != nullptr) {
    return InvalidArgumentError("folder id '" + id + "' is already used");
  }
  for (const FolderConfig& folder : folders) {
    std::string a = folder.path + "/", b = path + "/";
    if (a.starts_with(b) || b.starts_with(a)) {
      return InvalidArgumentError(path + " overlaps folder '" + folder.id + "' at " + folder.path);
    }
  }
  folders.push_back(FolderConfig{id, path, {}});
  return "added folder '" + id + "' at " + path;
}

Result<std::string> Config::ShareFolder(const std::string& folder, const DeviceId& device,
                                        bool share) {
  FolderConfig* entry = FindFolder(folder);
  if (entry == nullptr) return NotFoundError("no folder '" + folder + "'");
  if (FindPeer(device) == nullptr) {
    return NotFoundError("no peer " + device.ToString() + " (add it with `meshsync peer add`)");
  }
  std::erase(entry->shared_with, device);
  if (share) entry->shared_with.push_back(device);
  return std::string(share ? "shared" : "unshared") + " folder '" + folder + "' with " +
         device.ToString();
}

Result<std::string> Config::RemoveFolder(const std::string& id) {
  size_t before = folders.size();
  std::erase_if(folders, [&](const FolderConfig& f) { return f.id == id; });
  if (folders.size() == before) return NotFoundError("no folder '" + id + "'");
  return "removed folder '" + id + "' (its files and metadata are left in place)";
}

Status CheckAddress(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgumentError("address '" + address + "' is not HOST:PORT");
  }
  std::string port = address.substr(colon + 1);
  char* end = nullptr;
  long value = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || value < 0 || value > 65535) {
    return InvalidArgumentError("address '" + address + "' has no valid port (0-65535)");
  }
  std::string host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return InvalidArgumentError("address '" + address + "' has no host");
  return Status::Ok();
}

void SplitAddress(const std::string& address, std::string& host, std::string& port) {
  size_t colon = address.rfind(':');
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (!host.empty() && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
}

Result<Config> Config::Load(const std::string& path) {
  bool missing = false;
  MESHSYNC_ASSIGN_OR_RETURN(toml::table root, ParseFile(path, missing));
  Config config;
  for (const auto& [key, value] : root) {
    if (key != "node" && key != "peer" && key != "folder") {
      return AtLine(path, value, "unknown section '" + std::string(key.str()) + "'");
    }
  }
  if (const toml::node* node = root.get("node")) {
    const toml::table* table = node->as_table();
    if (table == nullptr) return AtLine(path, *node, "[node] must be a table");
    for (const auto& [key, value] : *table) {
      if (key != "name" && key != "listen" && key != "api" && key != "api_key" && key != "hub") {
        return AtLine(path, value, "unknown setting '" + std::string(key.str()) + "' in [node]");
      }
    }
    MESHSYNC_ASSIGN_OR_RETURN(config.name, GetString(path, *table, "name", false));
    MESHSYNC_ASSIGN_OR_RETURN(std::string listen, GetString(path, *table, "listen", false));
    MESHSYNC_ASSIGN_OR_RETURN(std::string api, GetString(path, *table, "api", false));
    MESHSYNC_ASSIGN_OR_RETURN(config.api_key, GetString(path, *table, "api_key", false));
    if (!listen.empty()) config.listen = listen;
    if (!api.empty()) config.api = api;
    for (const char* key : {"listen", "api"}) {
      const std::string& address = std::string_view(key) == "listen" ? config.listen : config.api;
      Status status = CheckAddress(address);
      if (!status.ok()) return AtLine(path, *table->get(key), status.message());
    }
    if (const toml::node* hub = table->get("hub")) {
      if (!hub->is_boolean()) return AtLine(path, *hub, "'hub' must be true or false");
      config.hub = *hub->value<bool>();
    }
  }
  if (const toml::node* node = root.get("peer")) {
    const toml::array* peers = node->as_array();
    if (peers == nullptr) return AtLine(path, *node, "peers are [[peer]] tables");
    for (const toml::node& entry : *peers) {
      const toml::table* table = entry.as_table();
      if (table == nullptr) return AtLine(path, entry, "peers are [[peer]] tables");
      PeerConfig peer;
      const toml::node* id = table->get("id");
      if (id == nullptr) return AtLine(path, entry, "a [[peer]] needs an 'id'");
      MESHSYNC_ASSIGN_OR_RETURN(peer.id, GetDevice(path, *id));
      MESHSYNC_ASSIGN_OR_RETURN(peer.name, GetString(path, *table, "name", false));
      MESHSYNC_ASSIGN_OR_RETURN(peer.address, GetString(path, *table, "address", false));
      if (peer.address.empty()) peer.address = "dynamic";
      if (peer.address != "dynamic") {
        Status status = CheckAddress(peer.address);
        if (!status.ok()) return AtLine(path, *table->get("address"), status.message());
      }
      if (config.FindPeer(peer.id) != nullptr) {
        return AtLine(path, *id, "peer " + peer.id.ToString() + " is listed twice");
      }
      config.peers.push_back(std::move(peer));
    }
  }
  if (const toml::node* node = root.get("folder")) {
    const toml::array* folders = node->as_array();
    if (folders == nullptr) return AtLine(path, *node, "folders are [[folder]] tables");
    for (const toml::node& entry : *folders) {
      const toml::table* table = entry.as_table();
      if (table == nullptr) return AtLine(path, entry, "folders are [[folder]] tables");
      FolderConfig folder;
      MESHSYNC_ASSIGN_OR_RETURN(folder.id, GetString(path, *table, "id", true));
      MESHSYNC_ASSIGN_OR_RETURN(folder.path, GetString(path, *table, "path", true));
      if (folder.id.empty() || folder.id.size() > 64) {
        return AtLine(path, entry, "a folder id has 1 to 64 characters");
      }
      if (folder.path.empty() || folder.path.front() != '/') {
        return AtLine(path, entry, "a folder path must be absolute");
      }
      if (const toml::node* shared = table->get("shared_with")) {
        const toml::array* list = shared->as_array();
        if (list == nullptr) return AtLine(path, *shared, "'shared_with' is a list of device ids");
        for (const toml::node& device : *list) {
          MESHSYNC_ASSIGN_OR_RETURN(DeviceId id, GetDevice(path, device));
          folder.shared_with.push_back(id);
        }
      }
      if (config.FindFolder(folder.id) != nullptr) {
        return AtLine(path, entry, "folder '" + folder.id + "' is listed twice");
      }
      config.folders.push_back(std::move(folder));
    }
  }
  return config;
}

Status Config::Save(const std::string& path) const {
  toml::table node{
      {"name", name}, {"listen", listen}, {"api", api}, {"api_key", api_key}, {"hub", hub}};
  toml::array peer_list;
  for (const PeerConfig& peer : peers) {
    peer_list.push_back(
        toml::table{{"id", peer.id.ToString()}, {"name", peer.name}, {"address", peer.address}});
  }
  toml::array folder_list;
  for (const FolderConfig& folder : folders) {
    toml::array shared;
    for (const DeviceId& id : folder.shared_with) shared.push_back(id.ToString());
    folder_list.push_back(
        toml::table{{"id", folder.id}, {"path", folder.path}, {"shared_with", shared}});
  }
  toml::table root{{"node", node}};
  if (!peer_list.empty()) root.insert("peer", peer_list);
  if (!folder_list.empty()) root.insert("folder", folder_list);
  std::ostringstream out;
  out << "# meshsync node configuration; `meshsync peer|folder ...` edit it.\n" << root << "\n";
  return WriteFileAtomically(path, out.str());
}

Result<std::vector<PendingFolder>> LoadPending(const std::string& path) {
  bool missing = false;
  MESHSYNC_ASSIGN_OR_RETURN(toml::table root, ParseFile(path, missing));
  std::vector<PendingFolder> out;
  const toml::array* list = root["pending"].as_array();
  if (list == nullptr) return out;
  for (const toml::node& entry : *list) {
    const toml::table* table = entry.as_table();
    if (table == nullptr) return AtLine(path, entry, "bad pending entry");
    PendingFolder pending;
    MESHSYNC_ASSIGN_OR_RETURN(pending.folder, GetString(path, *table, "folder", true));
    const toml::node* device = table->get("device");
    if (device == nullptr) return AtLine(path, entry, "pending entry has no device");
    MESHSYNC_ASSIGN_OR_RETURN(pending.device, GetDevice(path, *device));
    MESHSYNC_ASSIGN_OR_RETURN(pending.device_name, GetString(path, *table, "device_name", false));
    const toml::node* offered = table->get("offered");
    if (offered != nullptr)
      pending.offered_millis = static_cast<uint64_t>(offered->value_or<int64_t>(0));
    out.push_back(std::move(pending));
  }
  return out;
}

Status SavePending(const std::string& path, const std::vector<PendingFolder>& pending) {
  toml::array list;
  for (const PendingFolder& entry : pending) {
    list.push_back(toml::table{{"folder", entry.folder},
                               {"device", entry.device.ToString()},
                               {"device_name", entry.device_name},
                               {"offered", static_cast<int64_t>(entry.offered_millis)}});
  }
  std::ostringstream out;
  out << "# Folders offered by peers and not configured here (written by the daemon).\n"
      << toml::table{{"pending", list}} << "\n";
  return WriteFileAtomically(path, out.str());
}

std::string FolderFileName(std::string_view folder) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name;
  for (unsigned char c : folder) {
    name.push_back(kHex[c >> 4]);
    name.push_back(kHex[c & 15]);
  }
  return name;
}

std::string DefaultHome() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg != nullptr && *xdg == '/') return std::string(xdg) + "/meshsync";
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.config/meshsync";
}

}  // namespace meshsync::node
