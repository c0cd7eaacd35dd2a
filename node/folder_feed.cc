#include "node/folder_feed.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "feed/feedsync.h"
#include "node/config.h"

namespace meshsync::node {
namespace {

using feedsync::Feed;
using feedsync::Item;
using feedsync::Timestamp;

constexpr std::string_view kFeedNamespace = "urn:meshsync:feed";
constexpr std::string_view kMeta = ".meshsync";

// ---- Ids ----

bool Unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~' || c == '/';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---- base64 (RFC 4648), for file bytes that are not text ----

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                 static_cast<uint8_t>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> FromBase64(std::string_view text) {
  std::string out;
  uint32_t bits = 0;
  int count = 0, padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    const char* at = std::strchr(kAlphabet, c);
    if (c == '\0' || at == nullptr || padding > 0) {
      return InvalidArgumentError("atom:content is not valid base64");
    }
    bits = bits << 6 | static_cast<uint32_t>(at - kAlphabet);
    if (++count == 4) {
      out.push_back(static_cast<char>(bits >> 16));
      out.push_back(static_cast<char>(bits >> 8 & 0xff));
      out.push_back(static_cast<char>(bits & 0xff));
      bits = 0;
      count = 0;
    }
  }
  if (count == 1 || padding > 2) return InvalidArgumentError("atom:content is not valid base64");
  if (count == 2) out.push_back(static_cast<char>(bits >> 4));
  if (count == 3) {
    out.push_back(static_cast<char>(bits >> 10));
    out.push_back(static_cast<char>(bits >> 2 & 0xff));
  }
  return out;
}

// ---- The folder on disk ----

struct FileState {
  char kind = 'f';  // 'f' file, 'd' directory
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint32_t mode = 0;

  friend bool operator==(const FileState&, const FileState&) = default;
};

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// Files and directories under `root` (relative '/'-separated paths), not
// following links; symlinks and special files are not carried by the feed.
// A folder that cannot be read is an error, not an empty folder: its files
// would otherwise be published as deleted.
Status Walk(const std::string& root, const std::string& rel, const files::IgnoreRules& ignore,
            std::map<std::string, FileState>& out) {
  const std::string here = rel.empty() ? root : root + "/" + rel;
  DIR* dir = opendir(here.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT && !rel.empty()) return Status::Ok();  // gone since it was listed
    return UnavailableError("cannot read " + here + ": " + std::strerror(errno));
  }
  std::vector<std::string> subdirs;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == ".." || (rel.empty() && name == kMeta)) continue;
    std::string path = rel.empty() ? name : rel + "/" + name;
    struct stat st;
    if (lstat((root + "/" + path).c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // gone since it was listed
      closedir(dir);
      return UnavailableError("cannot stat " + path + ": " + std::strerror(errno));
    }
    const bool is_dir = S_ISDIR(st.st_mode);
    if ((!is_dir && !S_ISREG(st.st_mode)) || ignore.Ignored(path, is_dir)) continue;
    if (!xml::IsValidText(path)) continue;  // a name a feed cannot carry (not UTF-8)
    FileState state{is_dir ? 'd' : 'f', is_dir ? 0 : static_cast<uint64_t>(st.st_size), MtimeNs(st),
                    static_cast<uint32_t>(st.st_mode & 07777)};
    out[path] = state;
    if (is_dir) subdirs.push_back(path);
  }
  closedir(dir);
  for (const std::string& path : subdirs) MESHSYNC_RETURN_IF_ERROR(Walk(root, path, ignore, out));
  return Status::Ok();
}

Result<std::string> ReadSmallFile(const std::string& path, uint64_t limit) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return UnavailableError("cannot open " + path + ": " + std::strerror(errno));
  std::string out;
  char buffer[65536];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      if (n < 0) return UnavailableError("cannot read " + path);
      return out;
    }
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > limit) {
      close(fd);
      return FailedPreconditionError(path + " grew past the feed's content limit");
    }
  }
}

// ---- Entries ----

xml::Name AtomName(std::string local) {
  return xml::Name{std::string(feedsync::kAtomNamespace), std::move(local), ""};
}

xml::Element TextElement(xml::Name name, std::string text) {
  xml::Element element;
  element.name = std::move(name);
  if (!text.empty()) element.children.push_back(xml::Node{std::move(text)});
  return element;
}

xml::Element* FileElement(Item& item) { return item.element.Child(kFeedNamespace, "file"); }
const xml::Element* FileElement(const Item& item) {
  return item.element.Child(kFeedNamespace, "file");
}

uint64_t Number(const xml::Element* element, std::string_view name) {
  const std::string* text = element != nullptr ? element->Attr(name) : nullptr;
  return text != nullptr ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

std::optional<FileState> RecordedState(const Item& item) {
  const xml::Element* file = FileElement(item);
  if (file == nullptr || file->Attr("kind") == nullptr) return std::nullopt;
  FileState state;
  state.kind = *file->Attr("kind") == "dir" ? 'd' : 'f';
  state.size = Number(file, "size");
  state.mtime_ns = static_cast<int64_t>(Number(file, "mtime_ns"));
  state.mode = static_cast<uint32_t>(Number(file, "mode"));
  return state;
}

void SetFileElement(Item& item, const FileState& state, uint64_t seq) {
  xml::Element file;
  file.name = xml::Name{std::string(kFeedNamespace), "file", "ms"};
  file.SetAttr("kind", state.kind == 'd' ? "dir" : "file");
  file.SetAttr("size", std::to_string(state.size));
  file.SetAttr("mtime_ns", std::to_string(state.mtime_ns));
  file.SetAttr("mode", std::to_string(state.mode));
  file.SetAttr("seq", std::to_string(seq));
  if (xml::Element* old = FileElement(item)) {
    *old = std::move(file);
  } else {
    item.element.children.push_back(xml::Node{std::move(file)});
  }
}

// Rewrites the entry's Atom elements for the file at `path`.
void FillEntry(Item& item, const std::string& path, const FileState& state,
               const std::string* bytes) {
  item.element.name = AtomName("entry");
  item.element.children.clear();
  item.element.children.push_back(
      xml::Node{TextElement(AtomName("id"), "urn:meshsync:file:" + FeedIdForPath(path))});
  item.element.children.push_back(xml::Node{TextElement(AtomName("title"), path)});
  const Timestamp updated{state.mtime_ns / 1'000'000'000, 0};
  item.element.children.push_back(xml::Node{TextElement(AtomName("updated"), updated.ToString())});
  if (bytes != nullptr) {
    xml::Element content;
    content.name = AtomName("content");
    if (xml::IsValidText(*bytes) && bytes->find('\r') == std::string::npos) {
      content.SetAttr("type", "text");
      if (!bytes->empty()) content.children.push_back(xml::Node{*bytes});
    } else {
      content.SetAttr("type", "application/octet-stream");
      content.children.push_back(xml::Node{Base64(*bytes)});
    }
    item.element.children.push_back(xml::Node{std::move(content)});
  }
}

// What a winning entry asks the folder to hold.
struct Wanted {
  std::string path;
  bool deleted = false;
  bool dir = false;
  std::string bytes;
};

Result<Wanted> WantedFor(const Item& item) {
  Wanted wanted;
  MESHSYNC_ASSIGN_OR_RETURN(wanted.path, PathForFeedId(item.sync.id));
  if (item.sync.deleted) {
    wanted.deleted = true;
    return wanted;
  }
  const xml::Element* file = FileElement(item);
  const std::string* kind = file != nullptr ? file->Attr("kind") : nullptr;
  if (kind != nullptr && *kind == "dir") {
    wanted.dir = true;
    return wanted;
  }
  if (kind != nullptr && *kind != "file") {
    return InvalidArgumentError("item " + item.sync.id + ": ms:file kind must be file or dir");
  }
  const xml::Element* content = item.element.Child(feedsync::kAtomNamespace, "content");
  if (content == nullptr) {
    return InvalidArgumentError("item " + item.sync.id +
                                " has no atom:content (files over 1 MiB are not carried by the "
                                "feed; change them in the folder)");
  }
  const std::string* type = content->Attr("type");
  if (type == nullptr || *type == "text") {
    wanted.bytes = content->Text();
  } else if (*type == "application/octet-stream") {
    MESHSYNC_ASSIGN_OR_RETURN(wanted.bytes, FromBase64(content->Text()));
  } else {
    return InvalidArgumentError("item " + item.sync.id + ": atom:content type \"" + *type +
                                "\" is not text or application/octet-stream");
  }
  if (wanted.bytes.size() > FolderFeed::kMaxContentBytes) {
    return InvalidArgumentError("item " + item.sync.id + " carries more than 1 MiB");
  }
  return wanted;
}

// ---- Changing the folder ----

Status MakeParents(const std::string& root, const std::string& path) {
  size_t at = 0;
  while ((at = path.find('/', at)) != std::string::npos) {
    const std::string dir = root + "/" + path.substr(0, at);
    struct stat st;
    if (lstat(dir.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return FailedPreconditionError(path.substr(0, at) + " is not a folder here");
      }
    } else if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return UnavailableError("cannot create " + dir + ": " + std::strerror(errno));
    }
    ++at;
  }
  return Status::Ok();
}

class FolderWriter {
 public:
  FolderWriter(std::string root, Clock& clock) : root_(std::move(root)), clock_(clock) {}

  // A delete: a file goes to the trash; a folder only once it is empty
  // (files in it that the feed did not delete are live, so it stays, and
  // the next refresh publishes it again). Whether anything was removed.
  Result<bool> Remove(const std::string& path) {
    const std::string full = root_ + "/" + path;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) return false;
    if (S_ISDIR(st.st_mode)) {
      DIR* dir = opendir(full.c_str());
      if (dir == nullptr) return UnavailableError("cannot read " + path);
      bool empty = true;
      while (dirent* entry = readdir(dir)) {
        std::string_view name = entry->d_name;
        if (name != "." && name != "..") empty = false;
      }
      closedir(dir);
      if (!empty) return false;
    }
    MESHSYNC_RETURN_IF_ERROR(Trash(path));
    return true;
  }

  // Moves what is at `path` to the trash (nothing there: nothing to do).
  Status Trash(const std::string& path) {
    const std::string full = root_ + "/" + path;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) return Status::Ok();
    if (stamp_.empty()) stamp_ = "feed-" + std::to_string(clock_.NowMillis());
    const std::string to = std::string(kMeta) + "/trash/" + stamp_ + "/" + path;
    MESHSYNC_RETURN_IF_ERROR(MakeParents(root_, to));
    if (rename(full.c_str(), (root_ + "/" + to).c_str()) != 0) {
      return UnavailableError("cannot move " + path + " to the trash: " + std::strerror(errno));
    }
    return Status::Ok();
  }

  Status Write(const Wanted& wanted) {
    const std::string full = root_ + "/" + wanted.path;
    MESHSYNC_RETURN_IF_ERROR(MakeParents(root_, wanted.path));
    struct stat st;
    const bool exists = lstat(full.c_str(), &st) == 0;
    if (wanted.dir) {
      if (exists && S_ISDIR(st.st_mode)) return Status::Ok();
      MESHSYNC_RETURN_IF_ERROR(Trash(wanted.path));
      if (mkdir(full.c_str(), 0755) != 0) {
        return UnavailableError("cannot create " + wanted.path + ": " + std::strerror(errno));
      }
      return Status::Ok();
    }
    if (exists && S_ISDIR(st.st_mode)) {
      return FailedPreconditionError(wanted.path + " is a folder here, not a file");
    }
    MESHSYNC_RETURN_IF_ERROR(MakeParents(root_, std::string(kMeta) + "/tmp/x"));
    std::string temp = root_ + "/" + std::string(kMeta) + "/tmp/feed-XXXXXX";
    int fd = mkstemp(temp.data());
    if (fd < 0) return UnavailableError("cannot create a temporary file in " + root_);
    Status status = Status::Ok();
    std::string_view rest = wanted.bytes;
    while (!rest.empty() && status.ok()) {
      ssize_t n = write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) status = UnavailableError("cannot write " + temp + ": " + std::strerror(errno));
      if (n > 0) rest.remove_prefix(static_cast<size_t>(n));
    }
    const mode_t mode = exists ? (st.st_mode & 07777) : 0644;
    if (status.ok() && (fchmod(fd, mode) != 0 || fsync(fd) != 0)) {
      status = UnavailableError("cannot flush " + temp);
    }
    close(fd);
    if (status.ok() && exists) status = Trash(wanted.path);
    if (status.ok() && rename(temp.c_str(), full.c_str()) != 0) {
      status = UnavailableError("cannot write " + wanted.path + ": " + std::strerror(errno));
    }
    if (!status.ok()) unlink(temp.c_str());
    return status;
  }

 private:
  const std::string root_;
  Clock& clock_;
  std::string stamp_;
};

std::string Quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

std::string FeedMirrorPath(const std::string& home, std::string_view folder) {
  return home + "/feeds/" + FolderFileName(folder) + ".atom";
}

std::string FeedIdForPath(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : path) {
    auto byte = static_cast<unsigned char>(c);
    if (Unreserved(byte)) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 15]);
    }
  }
  return out;
}

Result<std::string> PathForFeedId(std::string_view id) {
  std::string path;
  for (size_t i = 0; i < id.size(); ++i) {
    if (id[i] != '%') {
      path.push_back(id[i]);
      continue;
    }
    int high = i + 2 < id.size() ? HexValue(id[i + 1]) : -1;
    int low = i + 2 < id.size() ? HexValue(id[i + 2]) : -1;
    if (high < 0 || low < 0) {
      return InvalidArgumentError("item id " + Quote(id) + " has a malformed %-escape");
    }
    path.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  auto unsafe = [&](std::string_view why) {
    return InvalidArgumentError("item id " + Quote(id) + " does not name a file in the folder (" +
                                std::string(why) + ")");
  };
  if (path.empty() || path.front() == '/') return unsafe("an absolute or empty path");
  if (path.find('\0') != std::string::npos) return unsafe("a NUL byte");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string_view part(path.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") return unsafe("an empty, . or .. part");
    if (start == 0 && part == kMeta) return unsafe("the metadata folder");
    start = end + 1;
  }
  return path;
}

FolderFeed::FolderFeed(std::string root, files::IgnoreRules ignore, std::string mirror,
                       std::string by, std::string self_link, Clock& clock)
    : root_(std::move(root)),
      ignore_(std::move(ignore)),
      mirror_(std::move(mirror)),
      by_(std::move(by)),
      self_link_(std::move(self_link)),
      clock_(clock) {}

namespace {

// The mirror, brought up to date with the folder.
struct Mirror {
  Feed feed;
  uint64_t seq = 0;  // the last change sequence given out
  bool dirty = false;
};

Timestamp NowStamp(Clock& clock) {
  return Timestamp{static_cast<int64_t>(clock.NowMillis() / 1000), 0};
}

Result<Mirror> LoadMirror(const std::string& path) {
  Mirror mirror;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    mirror.feed = Feed::New(feedsync::Format::kAtom, "meshsync folder");
    mirror.dirty = true;
    return mirror;
  }
  MESHSYNC_ASSIGN_OR_RETURN(mirror.feed, feedsync::ReadFeedFile(path));
  if (mirror.feed.sharing && mirror.feed.sharing->until) {
    mirror.seq = std::strtoull(mirror.feed.sharing->until->c_str(), nullptr, 10);
  }
  return mirror;
}

Status Refresh(Mirror& mirror, const std::string& root, const files::IgnoreRules& ignore,
               const std::string& by, Clock& clock) {
  std::map<std::string, FileState> disk;
  MESHSYNC_RETURN_IF_ERROR(Walk(root, "", ignore, disk));
  std::map<std::string, size_t> index;
  for (size_t k = 0; k < mirror.feed.items.size(); ++k) {
    index.emplace(mirror.feed.items[k].sync.id, k);
  }
  const Timestamp now = NowStamp(clock);
  for (const auto& [path, state] : disk) {
    const std::string id = FeedIdForPath(path);
    if (!feedsync::IsValidId(id)) continue;  // too long for an id
    auto at = index.find(id);
    Item* item = at != index.end() ? &mirror.feed.items[at->second] : nullptr;
    if (item != nullptr && !item->sync.deleted && RecordedState(*item) == state) continue;
    std::string bytes;
    bool carried = false;
    if (state.kind == 'f' && state.size <= FolderFeed::kMaxContentBytes) {
      auto read = ReadSmallFile(root + "/" + path, FolderFeed::kMaxContentBytes);
      if (!read.ok()) continue;  // vanished or grew: the next call sees it
      bytes = std::move(*read);
      carried = true;
    }
    if (item == nullptr) {
      Item created;
      FillEntry(created, path, state, carried ? &bytes : nullptr);
      MESHSYNC_RETURN_IF_ERROR(feedsync::Create(created, id, by, now));
      mirror.feed.items.push_back(std::move(created));
      item = &mirror.feed.items.back();
    } else {
      FillEntry(*item, path, state, carried ? &bytes : nullptr);
      item->sync.deleted = false;  // a path deleted before and here again
      MESHSYNC_RETURN_IF_ERROR(feedsync::Update(*item, by, now));
    }
    SetFileElement(*item, state, ++mirror.seq);
    mirror.dirty = true;
  }
  for (Item& item : mirror.feed.items) {
    if (item.sync.deleted) continue;
    auto path = PathForFeedId(item.sync.id);
    if (path.ok() && disk.contains(*path)) continue;
    MESHSYNC_RETURN_IF_ERROR(feedsync::Delete(item, by, now));
    const FileState gone = RecordedState(item).value_or(FileState{});
    SetFileElement(item, gone, ++mirror.seq);
    mirror.dirty = true;
  }
  return Status::Ok();
}

Status SaveMirror(Mirror& mirror, const std::string& path) {
  if (!mirror.dirty) return Status::Ok();
  if (!mirror.feed.sharing) mirror.feed.sharing.emplace();
  mirror.feed.sharing->until = std::to_string(mirror.seq);
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos) mkdir(path.substr(0, slash).c_str(), 0700);
  MESHSYNC_RETURN_IF_ERROR(feedsync::WriteFeedFile(mirror.feed, path));
  mirror.dirty = false;
  return Status::Ok();
}

}  // namespace

Result<std::string> FolderFeed::Publish(std::optional<uint64_t> since) {
  MESHSYNC_ASSIGN_OR_RETURN(Mirror mirror, LoadMirror(mirror_));
  MESHSYNC_RETURN_IF_ERROR(Refresh(mirror, root_, ignore_, by_, clock_));
  MESHSYNC_RETURN_IF_ERROR(SaveMirror(mirror, mirror_));
  Feed& feed = mirror.feed;
  feed.sharing.emplace();
  feed.sharing->until = std::to_string(mirror.seq);
  if (since) {
    feed.sharing->since = std::to_string(*since);
    feed.sharing->related.push_back(feedsync::Related{self_link_, "complete", std::nullopt});
    std::erase_if(feed.items,
                  [&](const Item& item) { return Number(FileElement(item), "seq") <= *since; });
  }
  return feedsync::WriteFeed(feed);
}

Result<std::string> FolderFeed::Accept(std::string_view document) {
  if (document.size() > kMaxPostedBytes) {
    return InvalidArgumentError("the posted feed is larger than 64 MiB");
  }
  feedsync::ReadOptions options;
  options.xml.max_bytes = kMaxPostedBytes;
  MESHSYNC_ASSIGN_OR_RETURN(Feed incoming, feedsync::ParseFeed(document, options));
  std::set<std::string> ids;
  for (const Item& item : incoming.items) {
    MESHSYNC_ASSIGN_OR_RETURN(std::string path, PathForFeedId(item.sync.id));
    if (ignore_.Ignored(path, false)) {
      return InvalidArgumentError("item " + Quote(item.sync.id) + " names an ignored path");
    }
    ids.insert(item.sync.id);
  }
  MESHSYNC_ASSIGN_OR_RETURN(Mirror mirror, LoadMirror(mirror_));
  MESHSYNC_RETURN_IF_ERROR(Refresh(mirror, root_, ignore_, by_, clock_));
  // What each posted id was before the merge, to find where the posted
  // version won.
  auto version = [](const Item& item) {
    return std::to_string(item.sync.updates) + "/" + (item.sync.deleted ? "d" : "") + "/" +
           item.sync.topmost().by.value_or("") + "/" +
           (item.sync.topmost().when ? item.sync.topmost().when->ToString() : "") + "/" +
           std::to_string(item.sync.topmost().sequence);
  };
  std::map<std::string, std::string> before;
  for (const Item& item : mirror.feed.items) {
    if (ids.contains(item.sync.id)) before[item.sync.id] = version(item);
  }
  MESHSYNC_ASSIGN_OR_RETURN(feedsync::MergeStats stats,
                            feedsync::Merge(mirror.feed, std::move(incoming)));
  std::vector<Item*> won;
  std::vector<Wanted> wanted;
  for (Item& item : mirror.feed.items) {
    if (!ids.contains(item.sync.id)) continue;
    auto was = before.find(item.sync.id);
    if (was != before.end() && was->second == version(item)) continue;
    if (was == before.end() && item.sync.deleted) {
      // Deleted before this folder ever held it: nothing to write.
      continue;
    }
    MESHSYNC_ASSIGN_OR_RETURN(Wanted w, WantedFor(item));
    won.push_back(&item);
    wanted.push_back(std::move(w));
  }
  // Directories first, deepest deletes first: parents exist before their
  // files, and a folder is emptied before it goes.
  uint64_t written = 0, deleted = 0;
  FolderWriter writer(root_, clock_);
  std::vector<size_t> order(wanted.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    auto rank = [&](const Wanted& w) { return w.deleted ? 2 : w.dir ? 0 : 1; };
    if (rank(wanted[a]) != rank(wanted[b])) return rank(wanted[a]) < rank(wanted[b]);
    if (wanted[a].deleted) return wanted[a].path > wanted[b].path;
    return wanted[a].path < wanted[b].path;
  });
  for (size_t k : order) {
    const Wanted& w = wanted[k];
    // On an error the mirror is not saved: what was written so far is then
    // taken at the next refresh as the node's own edits, so no posted change
    // that reached the folder is lost, and none that did not is recorded.
    if (w.deleted) {
      MESHSYNC_ASSIGN_OR_RETURN(bool removed, writer.Remove(w.path));
      if (removed) ++deleted;
    } else {
      MESHSYNC_RETURN_IF_ERROR(writer.Write(w));
      ++written;
    }
    // The mirror holds what was written, so the next refresh does not
    // take it for a local edit.
    FileState state = RecordedState(*won[k]).value_or(FileState{});
    struct stat st;
    if (!w.deleted && lstat((root_ + "/" + w.path).c_str(), &st) == 0) {
      state = FileState{S_ISDIR(st.st_mode) ? 'd' : 'f',
                        S_ISDIR(st.st_mode) ? 0 : static_cast<uint64_t>(st.st_size), MtimeNs(st),
                        static_cast<uint32_t>(st.st_mode & 07777)};
    }
    SetFileElement(*won[k], state, ++mirror.seq);
    mirror.dirty = true;
  }
  MESHSYNC_RETURN_IF_ERROR(SaveMirror(mirror, mirror_));
  return "{\"added\": " + std::to_string(stats.added) +
         ", \"updated\": " + std::to_string(stats.updated) +
         ", \"unchanged\": " + std::to_string(stats.unchanged) +
         ", \"conflicts\": " + std::to_string(stats.conflicts) +
         ", \"written\": " + std::to_string(written) + ", \"deleted\": " + std::to_string(deleted) +
         "}";
}

}  // namespace meshsync::node
