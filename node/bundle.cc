#include "node/bundle.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <mutex>

#include "meshsync/atomic_file.h"
#include "meshsync/metadata_store.h"
#include "node/json.h"
#include "node/wire.h"

namespace meshsync::node {
namespace {

constexpr uint64_t kPieceBytes = 1u << 20;      // bulk data per BundleData record
constexpr size_t kWindowItems = 4096;           // items per ItemsScanned record
constexpr size_t kWindowBytes = 4u << 20;       // unit data per ItemsScanned record
constexpr uint64_t kMaxUnitData = 1ull << 40;   // a unit's bulk data, as a sanity bound
constexpr size_t kMaxListedItems = 50'000'000;  // items in one bundle

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string DeviceBytes(const DeviceId& id) {
  return std::string(reinterpret_cast<const char*>(id.bytes.data()), id.bytes.size());
}

Result<DeviceId> DeviceFromBytes(const std::string& bytes) {
  if (bytes.size() != 32) return InvalidArgumentError("a device id has 32 bytes");
  DeviceId id;
  std::memcpy(id.bytes.data(), bytes.data(), 32);
  return id;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (ctx_ != nullptr) EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr);
  }
  void Add(std::string_view data) { EVP_DigestUpdate(ctx_.get(), data.data(), data.size()); }
  std::string Finish() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &size);
    return std::string(reinterpret_cast<char*>(digest), size);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

// Writes a bundle to a temporary file next to its path, hashing every byte.
class Writer {
 public:
  ~Writer() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(temp_.c_str());
    }
  }

  Status Open(const std::string& path) {
    path_ = path;
    temp_ = path + ".partial";
    fd_ = ::open(temp_.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd_ < 0) return UnavailableError(Errno("cannot create " + temp_));
    return Write(kBundleMagic);
  }

  // Writes `bytes`, hashed for the signature.
  Status Write(std::string_view bytes) {
    hash_.Add(bytes);
    return WriteUnhashed(bytes);
  }

  Status Record(const wire::BundleRecord& record, bool compress = true) {
    MESHSYNC_ASSIGN_OR_RETURN(std::string frame, EncodeMessageFrame(record, compress));
    return Write(frame);
  }

  // Signs what was written, appends the end record and puts the file in place.
  Status Finish(const Identity& identity, wire::BundleRecord end) {
    MESHSYNC_ASSIGN_OR_RETURN(std::string signature, identity.Sign(hash_.Finish()));
    end.mutable_end()->set_signature(signature);
    MESHSYNC_ASSIGN_OR_RETURN(std::string frame, EncodeMessageFrame(end, false));
    MESHSYNC_RETURN_IF_ERROR(WriteUnhashed(frame));
    if (::fsync(fd_) != 0) return UnavailableError(Errno("cannot flush " + temp_));
    ::close(std::exchange(fd_, -1));
    if (::rename(temp_.c_str(), path_.c_str()) != 0) {
      Status status = UnavailableError(Errno("cannot rename " + temp_ + " to " + path_));
      ::unlink(temp_.c_str());
      return status;
    }
    return Status::Ok();
  }

 private:
  Status WriteUnhashed(std::string_view bytes) {
    for (size_t done = 0; done < bytes.size();) {
      ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return UnavailableError(Errno("cannot write " + temp_));
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  std::string path_;
  std::string temp_;
  int fd_ = -1;
  Sha256 hash_;
};

}  // namespace

std::string BundleStatsJson(const std::string& folder, const BundleStats& stats) {
  return "{\"folder\": " + JsonString(folder) + ", \"items\": " + std::to_string(stats.items) +
         ", \"lacking\": " + std::to_string(stats.lacking) +
         ", \"data_bytes\": " + std::to_string(stats.data_bytes) + "}";
}

Result<BundleStats> ExportBundle(const ServedFolder& folder, const std::string& folder_id,
                                 const Identity& identity, const DeviceId& target,
                                 std::string_view known, const std::string& path) {
  MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<MetadataStore> snapshot,
                            OpenSqliteSnapshot(folder.metadata_path, folder.provider_name));
  MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<Provider> provider, folder.open_provider(*snapshot));
  const ReplicaState& state = snapshot->state();
  ReplicaKeyMap target_keys = state.keys;
  Knowledge target_known;
  if (!known.empty()) {
    auto decoded = Knowledge::Decode(known, target_keys);
    if (!decoded.ok()) return DataLossError("the recorded knowledge of the target is corrupt");
    target_known = *std::move(decoded);
  }

  Writer writer;
  MESHSYNC_RETURN_IF_ERROR(writer.Open(path));
  wire::BundleRecord record;
  wire::BundleHeader* header = record.mutable_header();
  header->set_folder(folder_id);
  header->set_from_device(DeviceBytes(identity.id));
  header->set_for_device(DeviceBytes(target));
  header->set_created_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count());
  wire::SessionOpened* opened = header->mutable_opened();
  opened->set_provider(state.provider_name);
  for (const ReplicaId& replica : state.keys.ids()) opened->add_replica_ids(IdBytes(replica));
  opened->set_knowledge(state.knowledge.Encode(state.keys));
  opened->set_forgotten(state.forgotten.Encode(state.keys));
  MESHSYNC_ASSIGN_OR_RETURN(size_t count, snapshot->CountItems());
  opened->set_item_count(count);
  opened->set_filtered(provider->IsFiltered());
  header->set_assumed_known(std::string(known));
  MESHSYNC_ASSIGN_OR_RETURN(std::string cert, identity.CertificateDer());
  header->set_certificate(cert);
  MESHSYNC_RETURN_IF_ERROR(writer.Record(record));

  // Every item's versions; the unit data of those the target lacks.
  BundleStats stats;
  std::vector<ItemMetadata> lacking;
  std::vector<ItemMetadata> window;
  ItemId cursor = ItemId::Min();
  while (true) {
    window.clear();
    MESHSYNC_RETURN_IF_ERROR(snapshot->ScanItems(cursor, ItemId::Max(), kWindowItems, window));
    record.Clear();
    wire::ItemsScanned* items = record.mutable_items();
    size_t bytes = 0;
    for (const ItemMetadata& item : window) {
      ToWire(item, *items->add_items());
      ++stats.items;
      bytes += 64;
      if (item.tombstone || KnowsAllOf(target_known, item)) continue;
      // An item whose data cannot be read now is carried with the error; the
      // importer retries it from the next bundle.
      bytes += AddUnitData(*provider, item, 0, *items);  // bulk data goes in records of its own
      if (items->data().rbegin()->has_error()) continue;
      lacking.push_back(item);
      ++stats.lacking;
      if (bytes >= kWindowBytes && items->items_size() < static_cast<int>(window.size())) {
        // Large unit data: end this record early; the next starts after it.
        break;
      }
    }
    size_t written = static_cast<size_t>(items->items_size());
    if (written > 0) MESHSYNC_RETURN_IF_ERROR(writer.Record(record));
    if (written < window.size()) {
      cursor = window[written - 1].id.Next();
      continue;
    }
    if (window.size() < kWindowItems || window.back().id == ItemId::Max()) break;
    cursor = window.back().id.Next();
  }

  // The bulk data of the items the target lacks, in pieces.
  std::string buffer;
  for (const ItemMetadata& item : lacking) {
    for (const UnitVersion& unit : item.units) {
      auto reader = provider->OpenData(item, unit.unit);
      if (!reader.ok()) {
        if (reader.status().code() == StatusCode::kInvalidArgument) continue;  // no bulk data
        return reader.status().WithContext("item " + item.id.ToHex());
      }
      DataReader& in = **reader;
      const uint64_t size = in.size();
      for (uint64_t offset = 0; offset < size || offset == 0; offset += kPieceBytes) {
        uint64_t length = std::min<uint64_t>(kPieceBytes, size - offset);
        buffer.resize(length);
        MESHSYNC_RETURN_IF_ERROR(in.ReadAt(offset, std::span<char>(buffer.data(), length)));
        record.Clear();
        wire::BundleData* piece = record.mutable_data();
        piece->set_id(IdBytes(item.id));
        piece->set_unit(unit.unit);
        piece->set_size(size);
        piece->set_offset(offset);
        piece->set_length(length);
        MESHSYNC_RETURN_IF_ERROR(writer.Record(record, false));
        MESHSYNC_RETURN_IF_ERROR(writer.Write(buffer));
        stats.data_bytes += length;
        if (size == 0) break;
      }
      // A file edited while it was read would carry bytes no chunk list
      // matches: refuse the whole bundle rather than ship it.
      MESHSYNC_RETURN_IF_ERROR(in.Verify());
    }
  }

  record.Clear();
  record.mutable_end()->set_items(stats.items);
  record.mutable_end()->set_data_bytes(stats.data_bytes);
  MESHSYNC_RETURN_IF_ERROR(writer.Finish(identity, std::move(record)));
  return stats;
}

// ---------------------------------------------------------------------------
// Reading

namespace {

// Reads a bundle front to back, hashing what it reads.
class Reader {
 public:
  Reader(int fd, uint64_t size) : fd_(fd), size_(size) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return size_ - position_; }
  std::string Hash() { return hash_.Finish(); }

  Status Read(size_t length, std::string& out, bool hash = true) {
    if (length > remaining()) return DataLossError("the bundle is truncated");
    out.resize(length);
    for (size_t done = 0; done < length;) {
      ssize_t n =
          ::pread(fd_, out.data() + done, length - done, static_cast<off_t>(position_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return UnavailableError(Errno("cannot read the bundle"));
      done += static_cast<size_t>(n);
    }
    position_ += length;
    if (hash) hash_.Add(out);
    return Status::Ok();
  }

  // Reads one record; `hash` false for the end record (it is not signed).
  Status Next(wire::BundleRecord& record, bool& is_end) {
    std::string header;
    MESHSYNC_RETURN_IF_ERROR(Read(kFrameHeaderSize, header, false));
    uint8_t flags = 0;
    MESHSYNC_ASSIGN_OR_RETURN(size_t length, DecodeFrameHeader(header, flags));
    std::string body;
    MESHSYNC_RETURN_IF_ERROR(Read(length, body, false));
    record.Clear();
    MESHSYNC_RETURN_IF_ERROR(DecodeMessageBody(body, flags, record));
    is_end = record.has_end();
    if (!is_end) {
      hash_.Add(header);
      hash_.Add(body);
    }
    return Status::Ok();
  }

 private:
  int fd_;
  uint64_t size_;
  uint64_t position_ = 0;
  Sha256 hash_;
};

}  // namespace

Bundle::~Bundle() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<Bundle>> Bundle::Open(const std::string& path) {
  std::unique_ptr<Bundle> bundle(new Bundle());
  bundle->path_ = path;
  bundle->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (bundle->fd_ < 0) return UnavailableError(Errno("cannot open " + path));
  Status loaded = bundle->Load();
  if (!loaded.ok()) return loaded.WithContext(path);
  return bundle;
}

Status Bundle::Load() {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return UnavailableError(Errno("cannot read"));
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError("not a regular file");
  Reader reader(fd_, static_cast<uint64_t>(st.st_size));
  std::string magic;
  if (reader.remaining() < kBundleMagic.size() || !reader.Read(kBundleMagic.size(), magic).ok() ||
      magic != kBundleMagic) {
    return InvalidArgumentError("not a meshsync bundle");
  }
  wire::BundleRecord record;
  bool is_end = false;
  MESHSYNC_RETURN_IF_ERROR(reader.Next(record, is_end));
  if (!record.has_header()) return DataLossError("the bundle does not start with its header");
  wire::BundleHeader header = std::move(*record.mutable_header());
  folder_ = header.folder();
  if (folder_.empty()) return DataLossError("the bundle names no folder");
  MESHSYNC_ASSIGN_OR_RETURN(from_, DeviceFromBytes(header.from_device()));
  MESHSYNC_ASSIGN_OR_RETURN(target_, DeviceFromBytes(header.for_device()));
  created_ms_ = header.created_ms();
  opened_ = header.opened();
  opened_.set_session(1);
  exporter_knowledge_ = opened_.knowledge();

  std::string last_id;
  bool in_data = false;
  std::pair<std::string, uint32_t> blob_key;
  while (true) {
    if (reader.remaining() == 0) return DataLossError("the bundle is truncated (no end record)");
    MESHSYNC_RETURN_IF_ERROR(reader.Next(record, is_end));
    if (is_end) break;
    if (record.has_items()) {
      if (in_data) return DataLossError("the bundle lists items after its data");
      for (wire::Item& item : *record.mutable_items()->mutable_items()) {
        if (item.id().size() != 16 || (!items_.empty() && item.id() <= last_id)) {
          return DataLossError("the bundle's items are malformed or out of order");
        }
        if (items_.size() >= kMaxListedItems)
          return DataLossError("the bundle lists too many items");
        last_id = item.id();
        items_.push_back(std::move(item));
      }
      for (wire::Prefetched& data : *record.mutable_items()->mutable_data()) {
        std::string id = data.id();
        if (!data_.emplace(std::move(id), std::move(data)).second) {
          return DataLossError("the bundle carries an item's data twice");
        }
      }
    } else if (record.has_data()) {
      in_data = true;
      const wire::BundleData& piece = record.data();
      if (piece.id().size() != 16 || piece.size() > kMaxUnitData || piece.length() > kPieceBytes ||
          piece.offset() > piece.size() || piece.length() > piece.size() - piece.offset()) {
        return DataLossError("the bundle's data is malformed");
      }
      std::pair<std::string, uint32_t> key{piece.id(), piece.unit()};
      Blob& blob = blobs_[key];
      uint64_t end =
          blob.pieces.empty() ? 0 : blob.pieces.back().offset + blob.pieces.back().length;
      if ((!blob.pieces.empty() && (key != blob_key || blob.size != piece.size())) ||
          piece.offset() != end) {
        return DataLossError("the bundle's data pieces are out of order");
      }
      blob_key = key;
      blob.size = piece.size();
      blob.pieces.push_back(Piece{piece.offset(), piece.length(), reader.position()});
      std::string bytes;
      MESHSYNC_RETURN_IF_ERROR(reader.Read(piece.length(), bytes));  // hashed
      stats_.data_bytes += piece.length();
    } else {
      return DataLossError("the bundle holds an unexpected record");
    }
  }
  if (reader.remaining() != 0) return DataLossError("the bundle has bytes after its end");
  for (const auto& [key, blob] : blobs_) {
    uint64_t have = blob.pieces.back().offset + blob.pieces.back().length;
    if (have != blob.size) return DataLossError("the bundle's data of an item is incomplete");
  }
  const wire::BundleEnd& end = record.end();
  if (end.items() != items_.size() || end.data_bytes() != stats_.data_bytes) {
    return DataLossError("the bundle's contents do not match its end record");
  }
  MESHSYNC_ASSIGN_OR_RETURN(DeviceId signer,
                            VerifySignature(header.certificate(), reader.Hash(), end.signature()));
  if (signer != from_) {
    return DataLossError("the bundle is signed by " + signer.ToString() + ", not by the device " +
                         from_.ToString() + " it names");
  }
  stats_.items = items_.size();
  stats_.lacking = data_.size();
  return Status::Ok();
}

// Answers the requests of a RemoteSource as a session server would.
class Bundle::Answerer final : public Transport {
 public:
  explicit Answerer(Bundle& bundle) : bundle_(bundle) {}

  Result<wire::Response> Call(wire::Request request) override {
    std::lock_guard<std::mutex> lock(mu_);
    return Answer(request);
  }

  std::future<Result<wire::Response>> CallAsync(wire::Request request) override {
    std::promise<Result<wire::Response>> promise;
    promise.set_value(Call(std::move(request)));
    return promise.get_future();
  }

 private:
  Result<wire::Response> Answer(const wire::Request& request) {
    wire::Response response;
    switch (request.call_case()) {
      case wire::Request::kOpenSession:
        if (request.open_session().folder() != bundle_.folder_) {
          return NotFoundError("the bundle holds folder '" + bundle_.folder_ + "'");
        }
        *response.mutable_session_opened() = bundle_.opened_;
        return response;
      case wire::Request::kScanItems: {
        const wire::ScanItems& scan = request.scan_items();
        auto it = std::lower_bound(
            bundle_.items_.begin(), bundle_.items_.end(), scan.first(),
            [](const wire::Item& item, const std::string& id) { return item.id() < id; });
        wire::ItemsScanned* out = response.mutable_items_scanned();
        for (; it != bundle_.items_.end() && it->id() <= scan.last() &&
               out->items_size() < static_cast<int>(scan.limit());
             ++it) {
          *out->add_items() = *it;
          if (auto data = bundle_.data_.find(it->id()); data != bundle_.data_.end()) {
            *out->add_data() = data->second;
          }
        }
        return response;
      }
      case wire::Request::kLoadData: {
        const wire::LoadData& load = request.load_data();
        auto data = bundle_.data_.find(load.id());
        if (data == bundle_.data_.end()) {
          return NotFoundError("the bundle does not carry this item's data");
        }
        MESHSYNC_RETURN_IF_ERROR(StatusFromWire(data->second.error()));
        wire::DataLoaded* out = response.mutable_data_loaded();
        for (const wire::UnitData& unit : data->second.units()) {
          if (std::find(load.units().begin(), load.units().end(), unit.unit()) !=
              load.units().end()) {
            *out->add_units() = unit;
          }
        }
        return response;
      }
      case wire::Request::kOpenData: {
        const wire::OpenData& open = request.open_data();
        auto blob = bundle_.blobs_.find({open.id(), open.unit()});
        if (blob == bundle_.blobs_.end()) {
          return NotFoundError("the bundle does not carry this item's data");
        }
        uint64_t handle = next_handle_++;
        handles_.emplace(handle, &blob->second);
        response.mutable_data_opened()->set_handle(handle);
        response.mutable_data_opened()->set_size(blob->second.size);
        return response;
      }
      case wire::Request::kReadData: {
        const wire::ReadData& read = request.read_data();
        auto it = handles_.find(read.handle());
        if (it == handles_.end()) return InvalidArgumentError("no such data handle");
        const Blob& blob = *it->second;
        if (read.close()) handles_.erase(it);
        if (read.offset() > blob.size || read.length() > blob.size - read.offset()) {
          return InvalidArgumentError("read past the end of the data");
        }
        std::string* out = response.mutable_data_read()->mutable_data();
        out->resize(read.length());
        uint64_t at = read.offset();
        const uint64_t end = at + read.length();
        auto piece =
            std::partition_point(blob.pieces.begin(), blob.pieces.end(),
                                 [&](const Piece& p) { return p.offset + p.length <= at; });
        for (; at < end && piece != blob.pieces.end(); ++piece) {
          uint64_t within = at - piece->offset;
          uint64_t n = std::min(end - at, piece->length - within);
          for (uint64_t done = 0; done < n;) {
            ssize_t got = ::pread(bundle_.fd_, out->data() + (at - read.offset()) + done, n - done,
                                  static_cast<off_t>(piece->position + within + done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return UnavailableError(Errno("cannot read the bundle"));
            done += static_cast<uint64_t>(got);
          }
          at += n;
        }
        return response;
      }
      case wire::Request::kCloseSession:
        handles_.clear();
        return response;
      case wire::Request::CALL_NOT_SET:
        break;
    }
    return InvalidArgumentError("unknown request");
  }

  Bundle& bundle_;
  std::mutex mu_;
  uint64_t next_handle_ = 1;
  std::map<uint64_t, const Blob*> handles_;
};

std::shared_ptr<Transport> Bundle::transport() { return std::make_shared<Answerer>(*this); }

// ---------------------------------------------------------------------------
// The node's side

ServedFolder ServeFolder(const files::Folder& folder) {
  ServedFolder served;
  served.metadata_path = folder.metadata_path();
  served.provider_name = std::string(files::kProviderName);
  served.open_provider =
      [spec = folder.reader_spec()](MetadataStore& store) -> Result<std::unique_ptr<Provider>> {
    MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<files::FileProvider> reader,
                              files::OpenFolderReader(spec, store));
    return std::unique_ptr<Provider>(std::move(reader));
  };
  return served;
}

std::string KnownPath(const std::string& home, const std::string& folder, const DeviceId& device) {
  return home + "/known/" + FolderFileName(folder) + "/" + device.ToString();
}

Status RecordKnown(const std::string& home, const std::string& folder, const DeviceId& device,
                   std::string_view known) {
  std::string path = KnownPath(home, folder, device);
  std::string dir = path.substr(0, path.rfind('/'));
  ::mkdir((home + "/known").c_str(), 0700);
  ::mkdir(dir.c_str(), 0700);
  return WriteFileAtomically(path, known, 0600);
}

Result<std::string> LoadKnown(const std::string& home, const std::string& folder,
                              const DeviceId& device) {
  std::string path = KnownPath(home, folder, device);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return UnavailableError(Errno("cannot read " + path));
  }
  std::string out;
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status status = UnavailableError(Errno("cannot read " + path));
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Result<FolderConfig> CheckBundle(const Config& config, const Bundle& bundle) {
  const PeerConfig* peer = config.FindPeer(bundle.from());
  if (peer == nullptr) {
    return FailedPreconditionError("the bundle comes from " + bundle.from().ToString() +
                                   ", which is not a trusted device here (meshsync peer add " +
                                   bundle.from().ToString() + " dynamic)");
  }
  const FolderConfig* folder = config.FindFolder(bundle.folder());
  if (folder == nullptr) {
    return FailedPreconditionError("the bundle holds folder '" + bundle.folder() +
                                   "', which is not configured here (meshsync folder add PATH "
                                   "--id " +
                                   bundle.folder() + ")");
  }
  if (std::find(folder->shared_with.begin(), folder->shared_with.end(), bundle.from()) ==
      folder->shared_with.end()) {
    return FailedPreconditionError("folder '" + bundle.folder() + "' is not shared with " +
                                   bundle.from().ToString() + " (meshsync folder share " +
                                   bundle.folder() + " " + bundle.from().ToString() + ")");
  }
  return *folder;
}

Result<SyncReport> ImportBundle(Bundle& bundle, files::Folder& folder, bool detect_changes,
                                std::function<bool()> should_cancel) {
  // The folder's own edits are recorded first, so a change in the bundle
  // to a file edited here is a conflict, not an overwrite.
  if (detect_changes) MESHSYNC_RETURN_IF_ERROR(folder.replica().DetectChanges());
  MESHSYNC_ASSIGN_OR_RETURN(
      std::unique_ptr<RemoteSource> source,
      RemoteSource::Open(bundle.transport(), bundle.folder(), folder.replica().state()));
  const std::string& kind = source->replica().state().provider_name;
  if (kind != folder.replica().state().provider_name) {
    return FailedPreconditionError("the bundle holds '" + kind + "' items, not files");
  }
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.detect_changes = false;
  options.should_cancel = std::move(should_cancel);
  return Synchronize(source->replica(), folder.replica(), options);
}

}  // namespace meshsync::node
