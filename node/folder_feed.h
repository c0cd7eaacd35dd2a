// A folder as a FeedSync endpoint: the daemon serves a folder's files as a
// FeedSync Atom feed, complete or partial, and merges a feed posted back
// into the folder (docs/feedsync.md, "The node's folder feeds").
//
// The endpoint keeps its own feed, the mirror (HOME/feeds/FOLDER.atom), as
// every FeedSync endpoint does: one entry per file or directory, keyed by
// its path (sx:sync id: the path, percent-encoded), holding the path as
// atom:title, the bytes of a file up to kMaxContentBytes as atom:content
// (text, or base64 for other bytes), and an ms:file element with what the
// file was when last seen (kind, size, mtime, mode) and the mirror's change
// sequence. Each call first brings the mirror up to date with the folder:
// files that changed since are FeedSync updates by the node (its `by`),
// files that vanished are deletes. A rename is a delete and a create.
//
// Accepting a feed: every item's id must name a safe path inside the folder
// (no "..", no absolute path, not under .meshsync, not ignored) and every
// winning file must carry its content, or nothing is written. Then the
// feed is merged into the mirror (§3.3), and where the incoming version
// won, the folder is changed as a user would change it: a file is written
// to a temporary file and renamed into place, a deleted or overwritten file
// goes to .meshsync/trash/, and a deleted folder that still holds files the
// feed did not delete stays (the next refresh publishes it again). The
// node's watcher then syncs those changes to its peers. FeedSync conflicts
// stay in the mirror, and are published. A folder that cannot be read is an
// error, never taken for deleted files.
//
// Thread-compatible: the node runs each call on the folder's own thread.
#ifndef MESHSYNC_NODE_FOLDER_FEED_H_
#define MESHSYNC_NODE_FOLDER_FEED_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "files/ignore.h"
#include "meshsync/env.h"
#include "meshsync/status.h"

namespace meshsync::node {

class FolderFeed {
 public:
  static constexpr uint64_t kMaxContentBytes = 1 << 20;
  static constexpr uint64_t kMaxPostedBytes = 64 << 20;

  // `root`: the folder's real path; `mirror`: the mirror's file; `by`: the
  // node's FeedSync endpoint name; `self_link`: where the complete feed is
  // served, for sx:related.
  FolderFeed(std::string root, files::IgnoreRules ignore, std::string mirror, std::string by,
             std::string self_link, Clock& clock = SystemClock());

  // The folder as an Atom feed: complete, or (`since`) only the items that
  // changed after that sequence (sx:sharing since/until).
  Result<std::string> Publish(std::optional<uint64_t> since);

  // Merges `document` (a FeedSync Atom or RSS feed) into the folder. Returns
  // JSON: {"added", "updated", "unchanged", "conflicts", "written",
  // "deleted"}. kInvalidArgument, with nothing written, for a feed that is
  // malformed or names an unsafe path.
  Result<std::string> Accept(std::string_view document);

 private:
  const std::string root_;
  const files::IgnoreRules ignore_;
  const std::string mirror_;
  const std::string by_;
  const std::string self_link_;
  Clock& clock_;
};

// Where the node keeps folder `folder`'s mirror: HOME/feeds/HEX.atom.
std::string FeedMirrorPath(const std::string& home, std::string_view folder);

// A path's sx:sync id: bytes other than ASCII letters, digits and "-._~/"
// as %XX. And back: kInvalidArgument for a malformed id or one that is not
// a safe relative path.
std::string FeedIdForPath(std::string_view path);
Result<std::string> PathForFeedId(std::string_view id);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_FOLDER_FEED_H_
