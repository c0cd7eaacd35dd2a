#include "records/record_folder.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "meshsync/atomic_file.h"
#include "meshsync/record.h"

namespace meshsync {
namespace {

constexpr std::string_view kExtension = ".txt";
constexpr uint64_t kMaxRecordFile = 64 << 20;  // a record is not a bulk file
// How long after its last write a file's size and mtime are trusted to show
// any later write: more than a file system's timestamp granularity.
constexpr int64_t kRacyNanos = 2'000'000'000;

// Where the name part of a field line ends: the "{...}" prefix may hold ": ".
size_t NameSearchStart(std::string_view line) {
  if (!line.starts_with('{')) return 0;
  size_t close = line.find('}');
  return close == std::string_view::npos ? std::string_view::npos : close + 1;
}

Status CheckName(std::string_view name) {
  auto bad = [&](const char* why) {
    return InvalidArgumentError("field name \"" + std::string(name.substr(0, 80)) + "\" " + why);
  };
  if (name.empty()) return bad("is empty");
  if (name.find('\n') != std::string_view::npos) return bad("holds a newline");
  if (name.front() == ' ') return bad("starts with a space");
  size_t start = NameSearchStart(name);
  if (start == std::string_view::npos) return bad("has a { without its }");
  if (name.find(": ", start) != std::string_view::npos) return bad("holds \": \"");
  return Status::Ok();
}

// The state saved with an item: the file's identity, then its field hashes.
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t inode = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};
constexpr size_t kStampBytes = 24;

FileStamp StampOf(const struct stat& st) {
  return FileStamp{static_cast<uint64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<uint64_t>(st.st_ino)};
}

void PutFixed64(std::string& out, uint64_t v) {
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<char>(v >> (8 * k)));
}
uint64_t GetFixed64(std::string_view in) {
  uint64_t v = 0;
  for (int k = 0; k < 8; ++k)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[k])) << (8 * k);
  return v;
}

std::string EncodeState(const FileStamp& stamp, const FieldHashes& hashes) {
  std::string out;
  PutFixed64(out, stamp.size);
  PutFixed64(out, static_cast<uint64_t>(stamp.mtime_ns));
  PutFixed64(out, stamp.inode);
  return out + EncodeFieldHashes(hashes);
}
FileStamp StampOfState(std::string_view state) {
  if (state.size() < kStampBytes) return FileStamp{};
  return FileStamp{GetFixed64(state), static_cast<int64_t>(GetFixed64(state.substr(8))),
                   GetFixed64(state.substr(16))};
}
FieldHashes HashesOfState(std::string_view state) {
  return state.size() < kStampBytes ? FieldHashes() : DecodeFieldHashes(state.substr(kStampBytes));
}

// A record's fields by unit. kInvalidArgument when two names share a unit.
Result<std::map<ChangeUnitId, const std::pair<std::string, std::string>*>> UnitsOf(
    const RecordFields& fields) {
  std::map<ChangeUnitId, const std::pair<std::string, std::string>*> units;
  for (const auto& field : fields) {
    auto [it, inserted] = units.emplace(ChangeUnitIdFromName(field.first), &field);
    if (!inserted) {
      return InvalidArgumentError("fields \"" + it->second->first + "\" and \"" + field.first +
                                  "\" cannot be told apart");
    }
  }
  return units;
}

FieldHashes HashesOf(const RecordFields& fields) {
  FieldHashes hashes;
  for (const auto& [name, value] : fields) {
    hashes[ChangeUnitIdFromName(name)] = FieldHashOf(name, value);
  }
  return hashes;
}

bool IsRecordName(std::string_view name) {
  return !name.empty() && !name.starts_with('.') && !name.ends_with('~');
}

struct RecordFile {
  FileStamp stamp;
  mode_t mode = 0644;
  RecordFields fields;
};

// Reads record file `path`; nullopt if it does not exist.
Result<std::optional<RecordFile>> ReadRecord(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<RecordFile>();
    return UnavailableError("cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st;
  std::string text;
  Status status = Status::Ok();
  if (fstat(fd, &st) != 0) {
    status = UnavailableError("cannot stat " + path + ": " + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    status = InvalidArgumentError(path + " is not a regular file");
  } else if (static_cast<uint64_t>(st.st_size) > kMaxRecordFile) {
    status = InvalidArgumentError(path + " is larger than a record may be (64 MiB)");
  } else {
    text.resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = read(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = UnavailableError("cannot read " + path + ": " + std::strerror(errno));
        break;
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    if (status.ok() && done != text.size()) {
      status = UnavailableError(path + " changed while it was being read");
    }
  }
  close(fd);
  if (!status.ok()) return status;
  auto fields = ParseRecordFile(text);
  if (!fields.ok()) return fields.status();
  if (auto units = UnitsOf(*fields); !units.ok()) return units.status();  // every unit one field
  return std::optional<RecordFile>(
      RecordFile{StampOf(st), static_cast<mode_t>(st.st_mode & 07777), std::move(*fields)});
}

Result<FileStamp> StatRecord(const std::string& path, bool& exists) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    exists = false;
    if (errno == ENOENT) return FileStamp{};
    return UnavailableError("cannot stat " + path + ": " + std::strerror(errno));
  }
  exists = true;
  return StampOf(st);
}

std::string TrashStamp() {
  time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &tm);
  return buffer;
}

Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return UnavailableError("cannot create " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

Result<RecordFields> ParseRecordFile(std::string_view text) {
  RecordFields fields;
  std::set<std::string_view> names;
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    auto bad = [&](const std::string& why) {
      return InvalidArgumentError("line " + std::to_string(line_number) + ": " + why);
    };
    if (line.empty()) continue;
    if (line.front() == ' ') {
      if (fields.empty()) return bad("a continuation line before any field");
      fields.back().second.push_back('\n');
      fields.back().second.append(line.substr(1));
      continue;
    }
    size_t start = NameSearchStart(line);
    if (start == std::string_view::npos) return bad("a { without its }");
    size_t colon = line.find(": ", start);
    std::string_view name, value;
    if (colon != std::string_view::npos) {
      name = line.substr(0, colon);
      value = line.substr(colon + 2);
    } else if (line.ends_with(':') && line.size() > start) {
      name = line.substr(0, line.size() - 1);
    } else {
      return bad("not \"NAME: VALUE\"");
    }
    if (name.empty()) return bad("a field without a name");
    if (!names.insert(name).second) return bad("field \"" + std::string(name) + "\" again");
    fields.emplace_back(std::string(name), std::string(value));
  }
  return fields;
}

Result<std::string> FormatRecordFile(const RecordFields& fields) {
  std::string out;
  for (const auto& [name, value] : fields) {
    MESHSYNC_RETURN_IF_ERROR(CheckName(name));
    out += name;
    if (value.empty()) {
      out += ":\n";
      continue;
    }
    out += ": ";
    for (char c : value) {
      out.push_back(c);
      if (c == '\n') out.push_back(' ');
    }
    out.push_back('\n');
  }
  return out;
}

RecordFolderProvider::RecordFolderProvider(std::string dir) : dir_(std::move(dir)) {}

Status RecordFolderProvider::DetectChanges(ChangeRecorder& recorder) {
  problems_.clear();
  std::vector<std::string> names;
  {
    DIR* dir = opendir(dir_.c_str());
    if (dir == nullptr)
      return UnavailableError("cannot read " + dir_ + ": " + std::strerror(errno));
    errno = 0;
    while (struct dirent* entry = readdir(dir)) {
      if (IsRecordName(entry->d_name)) names.emplace_back(entry->d_name);
    }
    int error = errno;
    closedir(dir);
    if (error != 0) return UnavailableError("cannot read " + dir_ + ": " + std::strerror(error));
  }
  std::sort(names.begin(), names.end());

  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  const int64_t now_ns = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
  std::set<std::string> seen;
  for (const std::string& name : names) {
    const std::string path = PathOf(name);
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;  // not a record
    seen.insert(name);
    auto existing = recorder.FindByKey(name);
    if (!existing.ok()) return existing.status();
    const bool live = existing->has_value() && !(*existing)->tombstone;
    // A stamp proves nothing while the file is new enough that an edit in
    // the same clock tick would leave it as it is: such files are read.
    const bool settled = StampOf(st).mtime_ns < now_ns - kRacyNanos;
    if (live && settled && StampOfState((*existing)->provider_state) == StampOf(st)) continue;

    auto record = ReadRecord(path);
    if (!record.ok() || !record->has_value()) {
      Status why = record.ok() ? NotFoundError("vanished") : record.status();
      problems_.push_back(name + ": " + std::string(why.message()));
      continue;  // left alone, and not a deletion
    }
    const RecordFile& file = **record;
    FieldHashes hashes = HashesOf(file.fields);
    LocalChange change;
    change.key = name;
    change.provider_state = EncodeState(file.stamp, hashes);
    if (!live) {
      if (existing->has_value()) {
        change.id = (*existing)->id;  // re-created
      } else if (name.size() == 32 + kExtension.size() && name.ends_with(kExtension)) {
        // A record this provider wrote as ID.txt: that item again, unless
        // another item has that id.
        auto own = Id128::FromHex(std::string_view(name).substr(0, 32));
        if (own.ok()) {
          auto taken = recorder.FindItem(ItemId(*own));
          if (!taken.ok()) return taken.status();
          if (!taken->has_value() || (*taken)->key == name) change.id = ItemId(*own);
        }
      }
      for (const auto& [unit, hash] : hashes) change.changed_units.push_back(unit);
    } else {
      change.id = (*existing)->id;
      change.changed_units = ChangedUnits(HashesOfState((*existing)->provider_state), hashes);
      // With no unit changed (a touched file) the new state is saved alone.
    }
    auto recorded = recorder.Record(std::move(change));
    if (!recorded.ok()) return recorded.status();
  }

  return recorder.RecordDeletions(
      [&](const ItemMetadata& meta) { return !seen.contains(meta.key); });
}

Status RecordFolderProvider::LoadChangeData(const ItemMetadata& item,
                                            std::span<const ChangeUnitId> units,
                                            std::vector<UnitData>& out) {
  auto record = ReadRecord(PathOf(item.key));
  if (!record.ok()) return UnavailableError(std::string(record.status().message()));
  if (!record->has_value()) return NotFoundError(PathOf(item.key) + " is gone");
  if ((*record)->stamp != StampOfState(item.provider_state)) {
    return UnavailableError(PathOf(item.key) + " changed since it was read");
  }
  auto fields = UnitsOf((*record)->fields);
  if (!fields.ok()) return fields.status();
  for (ChangeUnitId unit : units) {
    auto it = fields->find(unit);
    if (it == fields->end()) continue;  // removed
    out.push_back(UnitData{unit, EncodeField(it->second->first, it->second->second)});
  }
  return Status::Ok();
}

Result<SaveResult> RecordFolderProvider::SaveChange(const SaveRequest& request) {
  // What is in the folder now, which must be what was detected. A record
  // new here (or deleted here before) gets its old name, else ID.txt.
  const bool live = request.local != nullptr && !request.local->tombstone;
  const std::string name = request.local != nullptr && !request.local->key.empty()
                               ? request.local->key
                               : request.id.ToHex() + std::string(kExtension);
  if (request.action == SaveAction::kDelete && !live) return SaveResult{name, std::string(), {}};
  std::optional<RecordFile> current;
  bool exists = false;
  auto before = StatRecord(PathOf(name), exists);
  if (!before.ok()) return before.status();
  if (exists && !live)
    return FailedPreconditionError(PathOf(name) + " exists and is another record");
  if (!exists && live) {
    // Removed since it was detected: the next detection records the delete.
    return UnavailableError(PathOf(name) + " was removed since it was read; it syncs next time");
  }
  if (exists && *before != StampOfState(request.local->provider_state)) {
    return UnavailableError(PathOf(name) + " changed since it was read; it syncs next time");
  }
  if (exists) {
    auto record = ReadRecord(PathOf(name));
    if (!record.ok()) return record.status();
    if (!record->has_value() ||
        HashesOf((*record)->fields) != HashesOfState(request.local->provider_state)) {
      return UnavailableError(PathOf(name) + " changed since it was read; it syncs next time");
    }
    current = std::move(*record);
  }

  if (request.action == SaveAction::kDelete) {
    if (current.has_value()) {
      const std::string trash = dir_ + "/.meshsync/trash";
      MESHSYNC_RETURN_IF_ERROR(MakeDir(dir_ + "/.meshsync"));
      MESHSYNC_RETURN_IF_ERROR(MakeDir(trash));
      const std::string to = trash + "/" + name + "." + TrashStamp();
      if (rename(PathOf(name).c_str(), to.c_str()) != 0) {
        return UnavailableError("cannot move " + PathOf(name) +
                                " to the trash: " + std::strerror(errno));
      }
    }
    return SaveResult{name, std::string(), {}};
  }

  RecordFields fields;
  mode_t mode = 0644;
  if (current.has_value()) {
    mode = current->mode;
    if (request.action == SaveAction::kUpdate) fields = std::move(current->fields);
  }
  std::set<ChangeUnitId> removed(request.removed_units.begin(), request.removed_units.end());
  if (request.action == SaveAction::kCreate && current.has_value()) {
    // Every unit is given: fields the change does not have go.
    for (const auto& [unit, unused] : HashesOf(current->fields)) removed.insert(unit);
    fields = std::move(current->fields);
  }
  for (const UnitData& unit : request.units) {
    std::string field, value;
    MESHSYNC_RETURN_IF_ERROR(DecodeField(unit.data, field, value));
    removed.erase(ChangeUnitIdFromName(field));
    auto it =
        std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return f.first == field; });
    if (it != fields.end()) {
      it->second = std::move(value);
    } else {
      fields.emplace_back(std::move(field), std::move(value));
    }
  }
  std::erase_if(fields,
                [&](const auto& f) { return removed.contains(ChangeUnitIdFromName(f.first)); });
  auto text = FormatRecordFile(fields);
  if (!text.ok()) return text.status();
  if (auto units = UnitsOf(fields); !units.ok()) return units.status();

  auto file = AtomicFile::Create(PathOf(name), mode);
  if (!file.ok()) return file.status();
  MESHSYNC_RETURN_IF_ERROR(file->Append(*text));
  MESHSYNC_RETURN_IF_ERROR(file->Commit());
  auto stamp = StatRecord(PathOf(name), exists);
  if (!stamp.ok()) return stamp.status();
  return SaveResult{name, EncodeState(*stamp, HashesOf(fields)), {}};
}

}  // namespace meshsync
