// Offline bundles: a folder's changes carried as one file to a device that
// never connects to this one.
//
// ExportBundle writes what the target device lacks as far as this node
// knows (the knowledge it announced when it last pulled from here or sent a
// bundle here; everything when it never did): every item's versions, and
// the unit data and bulk data of the items it lacks, signed with this
// node's key. The file appears whole or not at all.
//
// Bundle::Open reads a bundle, checks its structure and its signature, and
// keeps its metadata; its transport() answers a RemoteSource's requests from
// the file, so an import is the engine's one-way session with the bundle
// as the source, exactly as a pull from the exporting peer would be. A
// truncated, altered or malformed bundle is refused before anything is
// written; what it carries is then validated like anything from a peer.
#ifndef MESHSYNC_NODE_BUNDLE_H_
#define MESHSYNC_NODE_BUNDLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "files/folder.h"
#include "meshsync/status.h"
#include "meshsync/sync.h"
#include "node/config.h"
#include "node/identity.h"
#include "node/remote.h"

namespace meshsync::node {

inline constexpr std::string_view kBundleMagic = "MSBUNDL1";

struct BundleStats {
  uint64_t items = 0;       // listed
  uint64_t lacking = 0;     // carried with their data
  uint64_t data_bytes = 0;  // bulk data carried
};

// {"folder": ..., "items": N, "lacking": N, "data_bytes": N}
std::string BundleStatsJson(const std::string& folder, const BundleStats& stats);

// Writes the bundle of `folder` (as a session server would serve it) for
// `target` to `path`. `known` is the target's encoded knowledge, or empty.
Result<BundleStats> ExportBundle(const ServedFolder& folder, const std::string& folder_id,
                                 const Identity& identity, const DeviceId& target,
                                 std::string_view known, const std::string& path);

class Bundle {
 public:
  static Result<std::unique_ptr<Bundle>> Open(const std::string& path);
  ~Bundle();

  const std::string& folder() const { return folder_; }
  const DeviceId& from() const { return from_; }  // verified by the signature
  const DeviceId& target() const { return target_; }
  int64_t created_ms() const { return created_ms_; }
  // The exporter's knowledge when it wrote the bundle (encoded).
  const std::string& exporter_knowledge() const { return exporter_knowledge_; }
  const BundleStats& stats() const { return stats_; }

  // Answers a RemoteSource's requests from the bundle. Valid while the
  // bundle lives.
  std::shared_ptr<Transport> transport();

 private:
  class Answerer;
  struct Piece {
    uint64_t offset = 0;  // in the unit's data
    uint64_t length = 0;
    uint64_t position = 0;  // of its bytes in the file
  };
  struct Blob {
    uint64_t size = 0;
    std::vector<Piece> pieces;
  };
  Bundle() = default;
  Status Load();

  std::string path_;
  int fd_ = -1;
  std::string folder_;
  DeviceId from_;
  DeviceId target_;
  int64_t created_ms_ = 0;
  std::string exporter_knowledge_;
  BundleStats stats_;
  wire::SessionOpened opened_;
  std::vector<wire::Item> items_;                 // in id order
  std::map<std::string, wire::Prefetched> data_;  // item id bytes -> unit data
  std::map<std::pair<std::string, uint32_t>, Blob> blobs_;
};

// What a session server (or an export) needs to read `folder`; a copy, so
// it stays valid after the folder is closed.
ServedFolder ServeFolder(const files::Folder& folder);

// Where this node keeps the knowledge `device` last announced for `folder`
// (when it pulled from here, or in a bundle it sent): what an export for
// that device may leave out.
std::string KnownPath(const std::string& home, const std::string& folder, const DeviceId& device);
Status RecordKnown(const std::string& home, const std::string& folder, const DeviceId& device,
                   std::string_view known);
// Empty when nothing is recorded.
Result<std::string> LoadKnown(const std::string& home, const std::string& folder,
                              const DeviceId& device);

// Whether `config` lets `bundle` in: its signer is a trusted device, and its
// folder is configured here and shared with that device. Returns the folder.
Result<FolderConfig> CheckBundle(const Config& config, const Bundle& bundle);

// Applies `bundle` to `folder` as a pull from its exporter would, after
// finding the folder's own changes when `detect_changes`.
Result<SyncReport> ImportBundle(Bundle& bundle, files::Folder& folder, bool detect_changes,
                                std::function<bool()> should_cancel = nullptr);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_BUNDLE_H_
