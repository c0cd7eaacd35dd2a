#include "node_commands.h"

#include <limits.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>

#include "cli_util.h"
#include "node/api_client.h"
#include "node/bundle.h"
#include "node/config.h"
#include "node/identity.h"
#include "node/json.h"
#include "node/node.h"

namespace meshsync::cli {
namespace {

using node::Config;
using node::DeviceId;

constexpr const char* kPeerHelp =
    "usage: meshsync peer add DEVICE_ID ADDRESS [--name NAME] [--home HOME]\n"
    "       meshsync peer list [--home HOME]\n"
    "       meshsync peer remove DEVICE_ID [--home HOME]\n"
    "ADDRESS: HOST:PORT where the peer listens, or 'dynamic' (it connects to us)\n";
constexpr const char* kBundleHelp =
    "usage: meshsync bundle export FOLDER_ID --for DEVICE_ID FILE [--home HOME]\n"
    "       meshsync bundle import FILE [--home HOME]\n"
    "A bundle carries a folder's changes to a device that never connects to this one.\n"
    "Export writes what the device lacks, as far as this node knows (everything the\n"
    "first time), signed with this node's key; import checks the signature and that\n"
    "the sender is a trusted device the folder is shared with, then applies it as a\n"
    "sync with the sender would. With a daemon running on HOME, both go through it.\n";
constexpr const char* kFolderHelp =
    "usage: meshsync folder add PATH --id FOLDER_ID [--home HOME]\n"
    "       meshsync folder share FOLDER_ID DEVICE_ID [--home HOME]\n"
    "       meshsync folder unshare FOLDER_ID DEVICE_ID [--home HOME]\n"
    "       meshsync folder remove FOLDER_ID [--home HOME]\n"
    "       meshsync folder list [--home HOME]   (with invitations from peers)\n";

// Takes "--home H" (and other "--name value" options in `valued`) out of
// `args`; the rest stay positional.
struct Options {
  std::string home;
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
};

std::optional<std::string> Parse(const std::vector<std::string>& args,
                                 const std::vector<std::string>& valued, Options& out) {
  const char* env = std::getenv("MESHSYNC_HOME");
  out.home = env != nullptr && *env != '\0' ? env : node::DefaultHome();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    bool known = arg == "--home";
    for (const std::string& name : valued) known |= arg == name;
    if (known) {
      if (i + 1 >= args.size()) return arg + " needs a value";
      if (arg == "--home")
        out.home = args[++i];
      else
        out.values[arg] = args[++i];
    } else if (arg.starts_with("--")) {
      return "unknown option " + arg;
    } else {
      out.positional.push_back(arg);
    }
  }
  return std::nullopt;
}

std::string ConfigPath(const Options& options) { return options.home + "/config.toml"; }

// Loads the config of a home, creating the identity (and so the home) first.
Result<Config> LoadHome(const Options& options) {
  MESHSYNC_ASSIGN_OR_RETURN(node::Identity identity, node::Identity::LoadOrCreate(options.home));
  (void)identity;
  MESHSYNC_ASSIGN_OR_RETURN(Config config, Config::Load(ConfigPath(options)));
  if (config.api_key.empty()) {
    unsigned char bytes[24];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) return InternalError("no randomness for an API key");
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char b : bytes) {
      config.api_key.push_back(kHex[b >> 4]);
      config.api_key.push_back(kHex[b & 15]);
    }
  }
  if (config.name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0) config.name = host;
  }
  return config;
}

// Makes one `peer` or `folder` edit: through the API of a daemon running on
// the home (it applies the edit at once, and its own writes of the file
// cannot race with ours), else in the file, which a daemon started later
// reads.
int EditConfig(const Options& options, const std::string& target, const std::string& body,
               const std::function<Result<std::string>(Config&)>& edit) {
  if (node::DaemonRunning(options.home)) {
    auto answer = node::CallApi(options.home, "POST", target, body);
    if (!answer.ok()) return Fail(answer.status());
    auto message = node::JsonStringField(*answer, "message");
    std::printf("%s\n", message.ok() ? message->c_str() : answer->c_str());
    return 0;
  }
  auto config = LoadHome(options);
  if (!config.ok()) return Fail(config.status());
  auto done = edit(*config);
  if (!done.ok()) return Fail(done.status());
  Status saved = config->Save(ConfigPath(options));
  if (!saved.ok()) return Fail(saved);
  std::printf("%s\n", done->c_str());
  return 0;
}

}  // namespace

int RunConfig(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {}, options)) return Usage(error->c_str());
  const std::vector<std::string>& pos = options.positional;
  auto config = LoadHome(options);
  if (!config.ok()) return Fail(config.status());
  if (pos.size() == 1 && pos[0] == "show") {
    std::printf("name = %s\nlisten = %s\napi = %s\nhub = %s\nhome = %s\n", config->name.c_str(),
                config->listen.c_str(), config->api.c_str(), config->hub ? "true" : "false",
                options.home.c_str());
    return 0;
  }
  if (pos.size() != 3 || pos[0] != "set") {
    return Usage(
        "usage: meshsync config show | config set name|listen|api|hub VALUE [--home HOME]");
  }
  const std::string& key = pos[1];
  const std::string& value = pos[2];
  if (key == "name") {
    config->name = value;
  } else if (key == "listen" || key == "api") {
    Status status = node::CheckAddress(value);
    if (!status.ok()) return Fail(status);
    (key == "listen" ? config->listen : config->api) = value;
  } else if (key == "hub") {
    if (value != "true" && value != "false") return Usage("hub is true or false");
    config->hub = value == "true";
  } else {
    return Usage(("unknown setting '" + key + "' (name, listen, api, hub)").c_str());
  }
  Status status = config->Save(ConfigPath(options));
  if (!status.ok()) return Fail(status);
  return 0;
}

int RunId(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {}, options)) return Usage(error->c_str());
  if (!options.positional.empty()) return Usage("usage: meshsync id [--home HOME]");
  auto identity = node::Identity::LoadOrCreate(options.home);
  if (!identity.ok()) return Fail(identity.status());
  std::printf("%s\n", identity->id.ToString().c_str());
  return 0;
}

int RunPeer(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {"--name"}, options)) return Usage(error->c_str());
  const std::vector<std::string>& pos = options.positional;
  if (pos.empty() || pos[0] == "help") {
    std::fputs(kPeerHelp, pos.empty() ? stderr : stdout);
    return pos.empty() ? 2 : 0;
  }
  const std::string& verb = pos[0];
  if (verb == "list" && pos.size() == 1) {
    auto config = LoadHome(options);
    if (!config.ok()) return Fail(config.status());
    for (const node::PeerConfig& peer : config->peers) {
      std::printf("%s  %-20s %s\n", peer.id.ToString().c_str(),
                  peer.name.empty() ? "-" : peer.name.c_str(), peer.address.c_str());
    }
    return 0;
  }
  if (verb == "add" && pos.size() == 3) {
    auto id = DeviceId::Parse(pos[1]);
    if (!id.ok()) return Fail(id.status());
    node::PeerConfig peer{*id, options.values.count("--name") ? options.values["--name"] : "",
                          pos[2]};
    std::string body = "{\"id\": " + node::JsonString(id->ToString()) +
                       ", \"address\": " + node::JsonString(peer.address) +
                       (peer.name.empty() ? "" : ", \"name\": " + node::JsonString(peer.name)) +
                       "}";
    return EditConfig(options, "/api/peers/add", body, [&](Config& config) -> Result<std::string> {
      MESHSYNC_ASSIGN_OR_RETURN(node::Identity self, node::Identity::LoadOrCreate(options.home));
      return config.AddPeer(peer, self.id);
    });
  }
  if (verb == "remove" && pos.size() == 2) {
    auto id = DeviceId::Parse(pos[1]);
    if (!id.ok()) return Fail(id.status());
    return EditConfig(options, "/api/peers/remove",
                      "{\"id\": " + node::JsonString(id->ToString()) + "}",
                      [&](Config& config) { return config.RemovePeer(*id); });
  }
  std::fputs(kPeerHelp, stderr);
  return 2;
}

int RunFolder(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {"--id"}, options)) return Usage(error->c_str());
  const std::vector<std::string>& pos = options.positional;
  if (pos.empty() || pos[0] == "help") {
    std::fputs(kFolderHelp, pos.empty() ? stderr : stdout);
    return pos.empty() ? 2 : 0;
  }
  const std::string& verb = pos[0];
  if (verb == "list" && pos.size() == 1) {
    auto config = LoadHome(options);
    if (!config.ok()) return Fail(config.status());
    for (const node::FolderConfig& folder : config->folders) {
      std::printf("%s  %s\n", folder.id.c_str(), folder.path.c_str());
      for (const DeviceId& id : folder.shared_with) {
        const node::PeerConfig* peer = config->FindPeer(id);
        std::printf(
            "    shared with %s%s\n", id.ToString().c_str(),
            peer != nullptr && !peer->name.empty() ? (" (" + peer->name + ")").c_str() : "");
      }
    }
    auto pending = node::LoadPending(options.home + "/pending.toml");
    if (!pending.ok()) return Fail(pending.status());
    for (const node::PendingFolder& entry : *pending) {
      if (config->FindFolder(entry.folder) != nullptr) continue;
      std::printf("pending: folder '%s' offered by %s%s on %s\n", entry.folder.c_str(),
                  entry.device.ToString().c_str(),
                  entry.device_name.empty() ? "" : (" (" + entry.device_name + ")").c_str(),
                  Stamp(entry.offered_millis).c_str());
    }
    return 0;
  }
  if (verb == "add" && pos.size() == 2) {
    if (options.values.count("--id") == 0) return Usage("folder add needs --id FOLDER_ID");
    const std::string& id = options.values["--id"];
    char real[PATH_MAX];
    if (realpath(pos[1].c_str(), real) == nullptr) {
      return Fail(NotFoundError(pos[1] + ": no such folder"));
    }
    std::string path = real;
    return EditConfig(
        options, "/api/folders/add",
        "{\"id\": " + node::JsonString(id) + ", \"path\": " + node::JsonString(path) + "}",
        [&](Config& config) { return config.AddFolder(id, path); });
  }
  if ((verb == "share" || verb == "unshare") && pos.size() == 3) {
    auto id = DeviceId::Parse(pos[2]);
    if (!id.ok()) return Fail(id.status());
    bool share = verb == "share";
    return EditConfig(options, share ? "/api/folders/share" : "/api/folders/unshare",
                      "{\"folder\": " + node::JsonString(pos[1]) +
                          ", \"device\": " + node::JsonString(id->ToString()) + "}",
                      [&](Config& config) { return config.ShareFolder(pos[1], *id, share); });
  }
  if (verb == "remove" && pos.size() == 2) {
    return EditConfig(options, "/api/folders/remove", "{\"id\": " + node::JsonString(pos[1]) + "}",
                      [&](Config& config) { return config.RemoveFolder(pos[1]); });
  }
  std::fputs(kFolderHelp, stderr);
  return 2;
}

namespace {

std::string Absolute(const std::string& path) {
  if (path.starts_with("/")) return path;
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

// A bundle is written or applied while the CLI waits: as long as its data
// takes to copy, but not for ever.
constexpr std::chrono::seconds kBundleTimeout = std::chrono::hours(1);

int BundleExport(const Options& options, const std::string& folder_id, const std::string& target,
                 const std::string& file) {
  auto device = DeviceId::Parse(target);
  if (!device.ok()) return Fail(device.status());
  std::string path = Absolute(file);
  if (node::DaemonRunning(options.home)) {
    auto answer = node::CallApi(options.home, "POST", "/api/bundle/export",
                                "{\"folder\": " + node::JsonString(folder_id) +
                                    ", \"for\": " + node::JsonString(device->ToString()) +
                                    ", \"path\": " + node::JsonString(path) + "}",
                                kBundleTimeout);
    if (!answer.ok()) return Fail(answer.status());
    std::printf("%s\n", answer->c_str());
    return 0;
  }
  auto config = LoadHome(options);
  if (!config.ok()) return Fail(config.status());
  auto identity = node::Identity::LoadOrCreate(options.home);
  if (!identity.ok()) return Fail(identity.status());
  const node::FolderConfig* folder = config->FindFolder(folder_id);
  if (folder == nullptr) return Fail(NotFoundError("no folder '" + folder_id + "'"));
  // Opening the folder scans it, so the bundle carries its latest changes.
  files::FolderOptions folder_options;
  auto opened = files::Folder::Open(folder->path, folder_options);
  if (!opened.ok()) return Fail(opened.status());
  Status scanned = (*opened)->replica().DetectChanges();
  if (!scanned.ok()) return Fail(scanned);
  auto known = node::LoadKnown(options.home, folder_id, *device);
  if (!known.ok()) return Fail(known.status());
  auto stats =
      node::ExportBundle(node::ServeFolder(**opened), folder_id, *identity, *device, *known, path);
  if (!stats.ok()) return Fail(stats.status());
  std::printf("%s\n", node::BundleStatsJson(folder_id, *stats).c_str());
  return 0;
}

int BundleImport(const Options& options, const std::string& file) {
  std::string path = Absolute(file);
  if (node::DaemonRunning(options.home)) {
    auto answer = node::CallApi(options.home, "POST", "/api/bundle/import",
                                "{\"path\": " + node::JsonString(path) + "}", kBundleTimeout);
    if (!answer.ok()) return Fail(answer.status());
    std::printf("%s\n", answer->c_str());
    return 0;
  }
  auto config = LoadHome(options);
  if (!config.ok()) return Fail(config.status());
  auto bundle = node::Bundle::Open(path);
  if (!bundle.ok()) return Fail(bundle.status());
  auto folder = node::CheckBundle(*config, **bundle);
  if (!folder.ok()) return Fail(folder.status());
  files::FolderOptions folder_options;
  auto opened = files::Folder::Open(folder->path, folder_options);
  if (!opened.ok()) return Fail(opened.status());
  auto report = node::ImportBundle(**bundle, **opened, true);
  if (!report.ok()) return Fail(report.status());
  Status recorded = node::RecordKnown(options.home, folder->id, (*bundle)->from(),
                                      (*bundle)->exporter_knowledge());
  if (!recorded.ok()) return Fail(recorded);
  const DirectionReport& r = report->a_to_b;
  std::printf(
      "{\"folder\": %s, \"peer\": %s, \"created\": %llu, \"updated\": %llu, \"deleted\": "
      "%llu, \"conflicts\": %llu, \"errors\": %zu}\n",
      node::JsonString(folder->id).c_str(), node::JsonString((*bundle)->from().ToString()).c_str(),
      static_cast<unsigned long long>(r.created), static_cast<unsigned long long>(r.updated),
      static_cast<unsigned long long>(r.deleted), static_cast<unsigned long long>(r.conflicts),
      r.errors.size());
  for (const ItemError& error : r.errors) {
    std::fprintf(stderr, "not applied: %s\n", error.status.ToString().c_str());
  }
  return r.errors.empty() ? 0 : 1;
}

}  // namespace

int RunBundle(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {"--for"}, options)) return Usage(error->c_str());
  const auto& pos = options.positional;
  if (pos.size() == 3 && pos[0] == "export" && options.values.contains("--for")) {
    return BundleExport(options, pos[1], options.values.at("--for"), pos[2]);
  }
  if (pos.size() == 2 && pos[0] == "import" && options.values.empty()) {
    return BundleImport(options, pos[1]);
  }
  std::fputs(kBundleHelp, pos.size() == 1 && pos[0] == "help" ? stdout : stderr);
  return pos.size() == 1 && pos[0] == "help" ? 0 : 2;
}

int RunDaemon(const std::vector<std::string>& args) {
  Options options;
  if (auto error = Parse(args, {}, options)) return Usage(error->c_str());
  if (!options.positional.empty()) return Usage("usage: meshsync daemon [--home HOME]");
  // A long-running process that passes megabyte messages between threads.
  // Bulk data moves in 1 MiB blocks, several buffers each (read, frame,
  // received, parsed): they come from the heap and are reused, because a
  // fresh mapping per buffer costs 256 page faults, which on a virtual
  // machine made moving 1 GiB take 12 s of CPU per daemon instead of 2.4.
  // Larger buffers (scans with file data, up to 4 MiB) are mapped and given
  // back when freed; the heap keeps up to 16 MiB of free top before it
  // trims; and two arenas keep the threads' freed memory from piling up
  // apart.
  mallopt(M_MMAP_THRESHOLD, (2 << 20) + (64 << 10));
  mallopt(M_TRIM_THRESHOLD, 16 << 20);
  mallopt(M_ARENA_MAX, 2);
  // A first start writes the config (name, API key) so the CLI and the API agree.
  auto config = LoadHome(options);
  if (!config.ok()) return Fail(config.status());
  Status saved = config->Save(ConfigPath(options));
  if (!saved.ok()) return Fail(saved);
  auto node = node::Node::Open(options.home);
  if (!node.ok()) return Fail(node.status());
  Status status = (*node)->Run();
  if (!status.ok()) return Fail(status);
  return 0;
}

}  // namespace meshsync::cli
