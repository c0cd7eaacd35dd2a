// Watcher: tells where things under a folder change (inotify, every
// directory watched; new directories are added as they appear), as the
// directories whose entries changed, so that a scan can look only there.
// The node's periodic rescan is the safety net for what inotify misses (a
// network file system, an event lost in a race).
#ifndef MESHSYNC_NODE_WATCHER_H_
#define MESHSYNC_NODE_WATCHER_H_

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "meshsync/provider.h"
#include "meshsync/status.h"

namespace meshsync::node {

class Watcher {
 public:
  // What changed: directories relative to the root ("" is the root); a
  // recursive one appeared whole (created or moved in). `everything`: the
  // kernel's queue overflowed, so anything may have changed.
  struct Changes {
    std::vector<ChangeScope::Place> places;
    bool everything = false;
  };

  // Calls `on_change` (on the watcher's thread) after changes under `root`,
  // except in `skip` (a directory name at the root, e.g. ".meshsync").
  static Result<std::unique_ptr<Watcher>> Start(const std::string& root, std::string skip,
                                                std::function<void(Changes)> on_change);
  ~Watcher();

  // Whether every directory is watched (false once inotify ran out of
  // watches: changes below the ones left out are not reported).
  bool complete() const { return !full_; }

 private:
  Watcher() = default;
  void AddTree(const std::string& path);
  std::vector<int> WatchesUnder(const std::string& path) const;
  std::string Relative(const std::string& path) const;
  void Loop();

  std::string root_;
  std::string skip_;
  std::function<void(Changes)> on_change_;
  int fd_ = -1;
  int stop_fd_ = -1;
  std::atomic<bool> full_ = false;   // out of watches: logged once
  std::map<int, std::string> dirs_;  // watch descriptor -> path
  std::thread thread_;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_WATCHER_H_
