#include "node/remote.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <vector>

namespace meshsync::node {
namespace {

constexpr size_t kMaxSessions = 8;           // per connection
constexpr size_t kMaxReaders = 64;           // open data handles per session
constexpr uint32_t kMaxScan = 4096;          // items per ScanItems
constexpr uint64_t kMaxExamine = 65536;      // items one changes-only scan looks through
constexpr uint64_t kInlineBulk = 64u << 10;  // bulk data this small travels with the scan
constexpr uint32_t kMaxRead = 4u << 20;      // bytes per ReadData
// Unit data sent with one scan (and at most one small file's bytes past it:
// AddBulkData). 1 MiB keeps the frame under the daemon's mmap threshold
// (node_commands.cc), so its buffers are reused rather than mapped afresh:
// 10,000 small files took 13 MiB less peak RSS over both daemons and less
// CPU than with 3 MiB, and no longer.
constexpr size_t kPrefetchBudget = 1u << 20;
// The client reads ahead kReadAhead blocks of kReadBlock bytes. Each block
// in flight is held once on each side (kFlagData frames), so this is about
// 4 MiB of each daemon's memory while a large file moves; 1 MiB blocks held
// 10 MiB more over two daemons, and moved 4 x 256 MiB no faster.
constexpr uint32_t kReadBlock = 512u << 10;
constexpr size_t kReadAhead = 8;

Result<ItemId> ParseItemId(const std::string& bytes) {
  if (bytes.size() != 16) return InvalidArgumentError("an item id has 16 bytes");
  return ItemId(Id128::FromBytes(reinterpret_cast<const uint8_t*>(bytes.data())));
}

Result<Version> FromWire(const wire::Version& version, size_t replicas) {
  if (version.replica() >= replicas) {
    return InvalidArgumentError("a version names replica " + std::to_string(version.replica()) +
                                " of " + std::to_string(replicas));
  }
  return Version{version.replica(), version.tick()};
}

Result<ItemMetadata> FromWire(const wire::Item& item, size_t replicas) {
  ItemMetadata out;
  MESHSYNC_ASSIGN_OR_RETURN(out.id, ParseItemId(item.id()));
  MESHSYNC_ASSIGN_OR_RETURN(out.created, FromWire(item.created(), replicas));
  MESHSYNC_ASSIGN_OR_RETURN(out.updated, FromWire(item.updated(), replicas));
  if (out.created.IsNull() || out.updated.IsNull()) {
    return InvalidArgumentError("an item has no creation or update version");
  }
  out.tombstone = item.tombstone();
  for (const wire::UnitVersion& unit : item.units()) {
    if (!out.units.empty() && unit.unit() <= out.units.back().unit) {
      return InvalidArgumentError("an item's units are not in order");
    }
    MESHSYNC_ASSIGN_OR_RETURN(Version version, FromWire(unit.version(), replicas));
    if (version.IsNull()) return InvalidArgumentError("a unit has no version");
    out.units.push_back(UnitVersion{unit.unit(), version});
  }
  return out;
}

Status Malformed(const std::string& what) {
  return InvalidArgumentError("peer sent a malformed " + what);
}

void ToWire(const Version& version, wire::Version& out) {
  out.set_replica(version.replica);
  out.set_tick(version.tick);
}

}  // namespace

std::string IdBytes(const Id128& id) {
  uint8_t bytes[16];
  id.ToBytes(bytes);
  return std::string(reinterpret_cast<char*>(bytes), 16);
}

void ToWire(const ItemMetadata& item, wire::Item& out) {
  out.set_id(IdBytes(item.id));
  ToWire(item.created, *out.mutable_created());
  ToWire(item.updated, *out.mutable_updated());
  out.set_tombstone(item.tombstone);
  for (const UnitVersion& unit : item.units) {
    wire::UnitVersion* entry = out.add_units();
    entry->set_unit(unit.unit);
    ToWire(unit.version, *entry->mutable_version());
  }
}

// Adds to `prefetched` the bulk data of `item`'s units of up to kInlineBulk
// bytes, while `budget` lasts; returns the bytes added. The last unit may
// go past the budget: one left out costs the puller two round trips, and
// the scan that sends it ends there anyway.
size_t AddBulkData(Provider& provider, const ItemMetadata& item, size_t budget,
                   wire::Prefetched& prefetched) {
  size_t bytes = 0;
  for (const UnitVersion& unit : item.units) {
    auto reader = provider.OpenData(item, unit.unit);
    if (!reader.ok()) continue;  // no bulk data, or not now: fetched on its own
    const uint64_t size = (*reader)->size();
    if (size > kInlineBulk || bytes >= budget) continue;
    std::string data(size, '\0');
    if (!(*reader)->ReadAt(0, data).ok() || !(*reader)->Verify().ok()) continue;
    wire::UnitData* entry = prefetched.add_bulk();
    entry->set_unit(unit.unit);
    entry->set_data(std::move(data));
    bytes += size + 16;
  }
  return bytes;
}

size_t AddUnitData(Provider& provider, const ItemMetadata& item, size_t bulk_budget,
                   wire::ItemsScanned& out) {
  std::vector<ChangeUnitId> units;
  std::vector<UnitData> data;
  for (const UnitVersion& unit : item.units) units.push_back(unit.unit);
  wire::Prefetched* prefetched = out.add_data();
  prefetched->set_id(IdBytes(item.id));
  Status status = provider.LoadChangeData(item, units, data);
  if (!status.ok()) {
    // Sent as the error: the receiver retries the item later, as it would
    // one that failed to load on its own side.
    StatusToWire(status, *prefetched->mutable_error());
    return 0;
  }
  size_t bytes = 0;
  for (UnitData& unit : data) {
    bytes += unit.data.size() + 16;
    wire::UnitData* entry = prefetched->add_units();
    entry->set_unit(unit.unit);
    entry->set_data(std::move(unit.data));
  }
  if (bytes < bulk_budget) bytes += AddBulkData(provider, item, bulk_budget - bytes, *prefetched);
  return bytes;
}

// ---------------------------------------------------------------------------
// Client

class RemoteSource::Store final : public MetadataStore {
 public:
  Store(std::shared_ptr<Transport> connection, uint64_t session)
      : connection_(std::move(connection)), session_(session) {}

  Status Init(const wire::SessionOpened& opened) {
    std::vector<ReplicaId> ids;
    std::set<ReplicaId> seen;
    for (const std::string& bytes : opened.replica_ids()) {
      if (bytes.size() != 16) return Malformed("replica id");
      ReplicaId id(Id128::FromBytes(reinterpret_cast<const uint8_t*>(bytes.data())));
      if (!seen.insert(id).second) return Malformed("replica list (a duplicate)");
      ids.push_back(id);
    }
    if (ids.empty()) return Malformed("session (no replica id)");
    state_.id = ids[0];
    state_.provider_name = opened.provider();
    state_.keys = ReplicaKeyMap(std::move(ids));
    size_t known = state_.keys.size();
    auto knowledge = Knowledge::Decode(opened.knowledge(), state_.keys);
    auto forgotten = Knowledge::Decode(opened.forgotten(), state_.keys);
    if (!knowledge.ok() || !forgotten.ok() || state_.keys.size() != known) {
      return Malformed("knowledge");
    }
    state_.knowledge = *std::move(knowledge);
    state_.forgotten = *std::move(forgotten);
    count_ = opened.item_count();
    return Status::Ok();
  }

  const ReplicaState& state() const override { return state_; }

  Result<std::optional<ItemMetadata>> GetItem(const ItemId&) override {
    return FailedPreconditionError("a remote replica is read by scanning");
  }
  Result<std::optional<ItemMetadata>> FindByKey(std::string_view) override {
    return FailedPreconditionError("a remote replica is read by scanning");
  }

  Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                   std::vector<ItemMetadata>& out) override {
    uint32_t asked = static_cast<uint32_t>(std::min<size_t>(limit, kMaxScan));
    MESHSYNC_ASSIGN_OR_RETURN(wire::Response response, Scan(first, last, asked, false));
    wire::ItemsScanned& items = *response.mutable_items_scanned();
    // A window shorter than asked means "the end": the engine stops there,
    // so a server that caps the scan must not be mistaken for one.
    if (asked < limit && static_cast<size_t>(items.items_size()) == asked) {
      return InternalError("scan window larger than the protocol allows");
    }
    return Take(items, first, last, out);
  }

  // The server filters by the knowledge this session was opened with,
  // which is what the engine asks with (`known`, the same in its keys).
  Status ScanChanges(const ItemId& first, const Knowledge& known, size_t limit,
                     std::vector<ItemMetadata>& out, ChangeScan& change_scan) override {
    uint32_t asked = static_cast<uint32_t>(std::min<size_t>(std::max<size_t>(limit, 1), kMaxScan));
    MESHSYNC_ASSIGN_OR_RETURN(wire::Response response, Scan(first, ItemId::Max(), asked, true));
    wire::ItemsScanned& items = *response.mutable_items_scanned();
    if (items.through().empty()) {
      // A server that does not filter: a plain window, filtered here.
      std::vector<ItemMetadata> window;
      MESHSYNC_RETURN_IF_ERROR(Take(items, first, ItemId::Max(), window));
      bool end = window.size() < asked || window.back().id == ItemId::Max();
      change_scan.through = end ? ItemId::Max() : window.back().id;
      change_scan.examined = window.size();
      for (ItemMetadata& item : window) {
        if (!KnowsAllOf(known, item)) out.push_back(std::move(item));
      }
      return Status::Ok();
    }
    MESHSYNC_ASSIGN_OR_RETURN(change_scan.through, ParseItemId(items.through()));
    if (change_scan.through < first) return Malformed("scan (looked short of where it began)");
    if (items.examined() < static_cast<uint64_t>(items.items_size())) {
      return Malformed("scan (more items than examined)");
    }
    change_scan.examined = static_cast<size_t>(items.examined());
    MESHSYNC_RETURN_IF_ERROR(Take(items, first, change_scan.through, out));
    if (!(change_scan.through == ItemId::Max())) {
      // The engine asks for the next window once it has applied this one:
      // ask now, so that the peer reads it while this one is written here.
      const ItemId next = change_scan.through.Next();
      next_scan_ = NextScan{next, asked,
                            connection_->CallAsync(ScanRequest(next, ItemId::Max(), asked, true))};
    }
    return Status::Ok();
  }

  Result<size_t> CountItems() override { return static_cast<size_t>(count_); }
  Result<std::vector<ConflictRecord>> ListConflicts() override {
    return std::vector<ConflictRecord>();
  }
  Status Commit(const StoreBatch&) override {
    return FailedPreconditionError("a remote replica cannot be written");
  }

  struct Prefetch {
    Status status;
    std::vector<UnitData> units;
    std::map<ChangeUnitId, std::shared_ptr<const std::string>> bulk;
  };
  const Prefetch* FindPrefetched(const ItemId& id) const {
    auto it = prefetched_.find(id);
    return it == prefetched_.end() ? nullptr : &it->second;
  }

 private:
  wire::Request ScanRequest(const ItemId& first, const ItemId& last, uint32_t limit,
                            bool changes_only) const {
    wire::Request request;
    wire::ScanItems* scan = request.mutable_scan_items();
    scan->set_session(session_);
    scan->set_first(IdBytes(first));
    scan->set_last(IdBytes(last));
    scan->set_limit(limit);
    scan->set_changes_only(changes_only);
    return request;
  }

  Result<wire::Response> Scan(const ItemId& first, const ItemId& last, uint32_t limit,
                              bool changes_only) {
    prefetched_.clear();
    std::optional<NextScan> next = std::move(next_scan_);
    next_scan_.reset();
    const bool asked_already =
        next.has_value() && changes_only && next->first == first && next->limit == limit;
    MESHSYNC_ASSIGN_OR_RETURN(
        wire::Response response,
        asked_already ? next->answer.get()
                      : connection_->Call(ScanRequest(first, last, limit, changes_only)));
    if (!response.has_items_scanned()) return Malformed("scan answer");
    if (static_cast<size_t>(response.items_scanned().items_size()) > limit) {
      return Malformed("scan (too many items)");
    }
    return response;
  }

  // Appends the scanned items (checked: in [first, last], in id order) and
  // keeps the unit data sent with them (moved out of `items`).
  Status Take(wire::ItemsScanned& items, const ItemId& first, const ItemId& last,
              std::vector<ItemMetadata>& out) {
    size_t start = out.size();
    for (const wire::Item& wire_item : items.items()) {
      MESHSYNC_ASSIGN_OR_RETURN(ItemMetadata item, FromWire(wire_item, state_.keys.size()));
      if (item.id < first || item.id > last || (out.size() > start && !(out.back().id < item.id))) {
        return Malformed("scan (items out of range or order)");
      }
      out.push_back(std::move(item));
    }
    for (wire::Prefetched& data : *items.mutable_data()) {
      MESHSYNC_ASSIGN_OR_RETURN(ItemId id, ParseItemId(data.id()));
      Prefetch& entry = prefetched_[id];
      entry.status = StatusFromWire(data.error());
      for (wire::UnitData& unit : *data.mutable_units()) {
        entry.units.push_back(UnitData{unit.unit(), std::move(*unit.mutable_data())});
      }
      for (wire::UnitData& unit : *data.mutable_bulk()) {
        if (unit.data().size() > kInlineBulk) return Malformed("scan (inline data too large)");
        entry.bulk[unit.unit()] =
            std::make_shared<const std::string>(std::move(*unit.mutable_data()));
      }
    }
    return Status::Ok();
  }

  std::shared_ptr<Transport> connection_;
  uint64_t session_;
  ReplicaState state_;
  uint64_t count_ = 0;
  std::map<ItemId, Prefetch> prefetched_;  // for the last scanned window
  struct NextScan {
    ItemId first;
    uint32_t limit;
    std::future<Result<wire::Response>> answer;
  };
  std::optional<NextScan> next_scan_;  // asked before the engine asks
};

namespace {

// A unit's bytes that came with the scan.
class InlineReader final : public DataReader {
 public:
  explicit InlineReader(std::shared_ptr<const std::string> data) : data_(std::move(data)) {}
  uint64_t size() const override { return data_->size(); }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    if (offset > data_->size() || out.size() > data_->size() - offset) {
      return InvalidArgumentError("read past the end");
    }
    std::memcpy(out.data(), data_->data() + offset, out.size());
    return Status::Ok();
  }

 private:
  std::shared_ptr<const std::string> data_;
};

// Reads a remote unit's bytes in blocks, several requests in flight, for a
// reader that goes front to back (as a file copy does).
class RemoteReader final : public DataReader {
 public:
  RemoteReader(std::shared_ptr<Transport> connection, uint64_t session, uint64_t handle,
               uint64_t size)
      : connection_(std::move(connection)), session_(session), handle_(handle), size_(size) {}

  ~RemoteReader() override {
    wire::Request request;
    wire::ReadData* read = request.mutable_read_data();
    read->set_session(session_);
    read->set_handle(handle_);
    read->set_close(true);
    connection_->CallAsync(std::move(request));  // the answer is not needed
  }

  uint64_t size() const override { return size_; }

  void WillRead(std::span<const ByteRange> ranges) override {
    blocks_.clear();
    pieces_.clear();
    next_ = 0;
    planned_ = true;
    uint64_t floor = 0;
    for (const ByteRange& range : ranges) {
      if (range.offset < floor || range.offset > size_ || range.length > size_ - range.offset) {
        break;  // not ascending or past the end: what is planned so far stands
      }
      AddPieces(range.offset, range.length);
      floor = range.offset + range.length;
    }
  }

  Status ReadAt(uint64_t offset, std::span<char> out) override {
    if (offset > size_ || out.size() > size_ - offset) {
      return InvalidArgumentError("read past the end of the data");
    }
    if (!planned_) WillRead(std::array{ByteRange{0, size_}});
    size_t done = 0;
    while (done < out.size()) {
      uint64_t at = offset + done;
      // Drop blocks behind the reader; ask for the planned ones ahead.
      while (!blocks_.empty() && blocks_.front().offset + blocks_.front().length <= at) {
        blocks_.pop_front();
      }
      if (blocks_.empty() || blocks_.front().offset > at) Restart(at, out.size() - done);
      while (blocks_.size() < kReadAhead && next_ < pieces_.size()) Request(pieces_[next_++]);
      Block& front = blocks_.front();
      if (!front.ready) {
        Result<wire::Response> response = front.pending.get();
        front.ready = true;
        if (!response.ok()) return response.status();
        if (!response->has_data_read()) return Malformed("data answer");
        front.data = std::move(*response->mutable_data_read()->mutable_data());
        if (front.data.size() != front.length) {
          return UnavailableError("the peer's data changed while it was being read");
        }
      }
      size_t within = static_cast<size_t>(at - front.offset);
      size_t n = std::min(out.size() - done, front.data.size() - within);
      std::copy_n(front.data.data() + within, n, out.data() + done);
      done += n;
    }
    return Status::Ok();
  }

  Status Verify() override {
    wire::Request request;
    wire::ReadData* read = request.mutable_read_data();
    read->set_session(session_);
    read->set_handle(handle_);
    read->set_verify(true);
    return connection_->Call(std::move(request)).status();
  }

 private:
  // One read request: at most kReadBlock bytes.
  struct Piece {
    uint64_t offset = 0;
    uint32_t length = 0;
  };
  struct Block : Piece {
    bool ready = false;
    std::future<Result<wire::Response>> pending;
    std::string data;
  };

  void AddPieces(uint64_t offset, uint64_t length) {
    if (!pieces_.empty()) {  // continue a run that ends where this starts
      Piece& last = pieces_.back();
      if (last.offset + last.length == offset && last.length < kReadBlock) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kReadBlock - last.length, length));
        last.length += n;
        offset += n;
        length -= n;
      }
    }
    while (length > 0) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kReadBlock, length));
      pieces_.push_back(Piece{offset, n});
      offset += n;
      length -= n;
    }
  }

  // A read the blocks in flight do not cover: go on from the planned piece
  // holding `at`, or fetch an unplanned read on its own.
  void Restart(uint64_t at, uint64_t wanted) {
    blocks_.clear();
    next_ = static_cast<size_t>(
        std::partition_point(pieces_.begin(), pieces_.end(),
                             [&](const Piece& p) { return p.offset + p.length <= at; }) -
        pieces_.begin());
    if (next_ == pieces_.size() || pieces_[next_].offset > at) {
      uint64_t end = next_ == pieces_.size() ? size_ : pieces_[next_].offset;
      uint64_t n = std::min<uint64_t>({kReadBlock, end - at, std::max<uint64_t>(wanted, 1)});
      Request(Piece{at, static_cast<uint32_t>(n)});
    }
  }

  void Request(const Piece& piece) {
    wire::Request request;
    wire::ReadData* read = request.mutable_read_data();
    read->set_session(session_);
    read->set_handle(handle_);
    read->set_offset(piece.offset);
    read->set_length(piece.length);
    Block block;
    static_cast<Piece&>(block) = piece;
    block.pending = connection_->CallAsync(std::move(request));
    blocks_.push_back(std::move(block));
  }

  std::shared_ptr<Transport> connection_;
  uint64_t session_;
  uint64_t handle_;
  uint64_t size_;
  bool planned_ = false;
  std::vector<Piece> pieces_;  // what WillRead announced, in order
  size_t next_ = 0;            // the first piece not yet requested
  std::deque<Block> blocks_;   // requested, in order
};

}  // namespace

class RemoteSource::Source final : public Provider {
 public:
  Source(std::shared_ptr<Transport> connection, uint64_t session, const Store& store,
         std::string name, bool filtered)
      : connection_(std::move(connection)),
        session_(session),
        store_(store),
        name_(std::move(name)),
        filtered_(filtered) {}

  std::string_view Name() const override { return name_; }
  Status DetectChanges(ChangeRecorder&) override { return Status::Ok(); }  // the peer's job

  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override {
    std::vector<UnitData> loaded;
    const Store::Prefetch* prefetched = store_.FindPrefetched(item.id);
    if (prefetched != nullptr) {
      MESHSYNC_RETURN_IF_ERROR(prefetched->status);
      loaded = prefetched->units;
    } else {
      wire::Request request;
      wire::LoadData* load = request.mutable_load_data();
      load->set_session(session_);
      load->set_id(IdBytes(item.id));
      for (ChangeUnitId unit : units) load->add_units(unit);
      MESHSYNC_ASSIGN_OR_RETURN(wire::Response response, connection_->Call(std::move(request)));
      if (!response.has_data_loaded()) return Malformed("data answer");
      for (const wire::UnitData& unit : response.data_loaded().units()) {
        loaded.push_back(UnitData{unit.unit(), unit.data()});
      }
    }
    for (ChangeUnitId unit : units) {
      for (const UnitData& data : loaded) {
        if (data.unit == unit) {
          out.push_back(data);
          break;
        }
      }
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<DataReader>> OpenData(const ItemMetadata& item,
                                               ChangeUnitId unit) override {
    if (const Store::Prefetch* prefetched = store_.FindPrefetched(item.id)) {
      auto bulk = prefetched->bulk.find(unit);
      if (bulk != prefetched->bulk.end()) {
        return std::unique_ptr<DataReader>(std::make_unique<InlineReader>(bulk->second));
      }
    }
    wire::Request request;
    wire::OpenData* open = request.mutable_open_data();
    open->set_session(session_);
    open->set_id(IdBytes(item.id));
    open->set_unit(unit);
    MESHSYNC_ASSIGN_OR_RETURN(wire::Response response, connection_->Call(std::move(request)));
    if (!response.has_data_opened()) return Malformed("open answer");
    return std::unique_ptr<DataReader>(std::make_unique<RemoteReader>(
        connection_, session_, response.data_opened().handle(), response.data_opened().size()));
  }

  Result<SaveResult> SaveChange(const SaveRequest&) override {
    return FailedPreconditionError("a remote replica cannot be written");
  }

  bool IsFiltered() const override { return filtered_; }

 private:
  std::shared_ptr<Transport> connection_;
  uint64_t session_;
  const Store& store_;
  std::string name_;
  bool filtered_;
};

namespace {

class ConnectionTransport final : public Transport {
 public:
  explicit ConnectionTransport(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)) {}
  Result<wire::Response> Call(wire::Request request) override {
    return connection_->Call(std::move(request));
  }
  std::future<Result<wire::Response>> CallAsync(wire::Request request) override {
    return connection_->CallAsync(std::move(request));
  }

 private:
  std::shared_ptr<Connection> connection_;
};

}  // namespace

Result<std::unique_ptr<RemoteSource>> RemoteSource::Open(std::shared_ptr<Connection> connection,
                                                         const std::string& folder,
                                                         const ReplicaState& local_state) {
  return Open(std::make_shared<ConnectionTransport>(std::move(connection)), folder, local_state);
}

Result<std::unique_ptr<RemoteSource>> RemoteSource::Open(std::shared_ptr<Transport> connection,
                                                         const std::string& folder,
                                                         const ReplicaState& local_state) {
  wire::Request request;
  wire::OpenSession* open = request.mutable_open_session();
  open->set_folder(folder);
  open->set_known(local_state.knowledge.Encode(local_state.keys));
  MESHSYNC_ASSIGN_OR_RETURN(wire::Response response, connection->Call(std::move(request)));
  if (!response.has_session_opened()) return Malformed("session answer");
  const wire::SessionOpened& opened = response.session_opened();
  auto remote = std::unique_ptr<RemoteSource>(new RemoteSource());
  remote->connection_ = connection;
  remote->session_ = opened.session();
  remote->store_ = std::make_unique<Store>(connection, opened.session());
  MESHSYNC_RETURN_IF_ERROR(remote->store_->Init(opened));
  remote->provider_ = std::make_unique<Source>(connection, opened.session(), *remote->store_,
                                               opened.provider(), opened.filtered());
  MESHSYNC_ASSIGN_OR_RETURN(remote->replica_, Replica::Open(*remote->store_, *remote->provider_));
  return remote;
}

RemoteSource::~RemoteSource() {
  replica_.reset();
  provider_.reset();
  store_.reset();
  if (connection_ != nullptr && session_ != 0) {
    wire::Request request;
    request.mutable_close_session()->set_session(session_);
    connection_->CallAsync(std::move(request));
  }
}

// ---------------------------------------------------------------------------
// Server

struct SessionServer::Session {
  std::unique_ptr<MetadataStore> snapshot;  // destroyed after the provider
  std::unique_ptr<Provider> provider;
  ReplicaKeyMap peer_keys;  // the snapshot's keys, extended by the peer's knowledge
  Knowledge peer_known;
  std::map<uint64_t, std::unique_ptr<DataReader>> readers;

  ~Session() {
    readers.clear();
    provider.reset();
    snapshot.reset();
  }
};

SessionServer::SessionServer(Resolver resolver) : resolver_(std::move(resolver)) {}
SessionServer::~SessionServer() = default;

wire::Response SessionServer::Handle(const wire::Request& request) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<wire::Response> result = Dispatch(request);
  wire::Response response;
  if (result.ok())
    response = *std::move(result);
  else
    StatusToWire(result.status(), *response.mutable_error());
  response.set_id(request.id());
  return response;
}

Result<SessionServer::Session*> SessionServer::Find(uint64_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return InvalidArgumentError("no session " + std::to_string(id));
  return it->second.get();
}

Result<wire::Response> SessionServer::Dispatch(const wire::Request& request) {
  wire::Response response;
  switch (request.call_case()) {
    case wire::Request::kOpenSession: {
      if (sessions_.size() >= kMaxSessions) {
        return UnavailableError("too many sessions on one connection");
      }
      MESHSYNC_ASSIGN_OR_RETURN(ServedFolder folder, resolver_(request.open_session().folder()));
      auto session = std::make_unique<Session>();
      MESHSYNC_ASSIGN_OR_RETURN(session->snapshot,
                                OpenSqliteSnapshot(folder.metadata_path, folder.provider_name));
      MESHSYNC_ASSIGN_OR_RETURN(session->provider, folder.open_provider(*session->snapshot));
      const ReplicaState& state = session->snapshot->state();
      session->peer_keys = state.keys;
      auto known = Knowledge::Decode(request.open_session().known(), session->peer_keys);
      if (!known.ok()) return InvalidArgumentError("the session's knowledge is malformed");
      session->peer_known = *std::move(known);
      if (folder.on_session) folder.on_session(request.open_session().known());
      wire::SessionOpened* opened = response.mutable_session_opened();
      uint64_t id = next_session_++;
      opened->set_session(id);
      opened->set_provider(state.provider_name);
      for (const ReplicaId& replica : state.keys.ids()) opened->add_replica_ids(IdBytes(replica));
      opened->set_knowledge(state.knowledge.Encode(state.keys));
      opened->set_forgotten(state.forgotten.Encode(state.keys));
      MESHSYNC_ASSIGN_OR_RETURN(size_t count, session->snapshot->CountItems());
      opened->set_item_count(count);
      opened->set_filtered(session->provider->IsFiltered());
      sessions_.emplace(id, std::move(session));
      return response;
    }
    case wire::Request::kScanItems: {
      const wire::ScanItems& scan = request.scan_items();
      MESHSYNC_ASSIGN_OR_RETURN(Session * session, Find(scan.session()));
      MESHSYNC_ASSIGN_OR_RETURN(ItemId first, ParseItemId(scan.first()));
      MESHSYNC_ASSIGN_OR_RETURN(ItemId last, ParseItemId(scan.last()));
      if (scan.limit() == 0 || scan.limit() > kMaxScan) {
        return InvalidArgumentError("scan limit out of range");
      }
      wire::ItemsScanned* out = response.mutable_items_scanned();
      size_t budget = kPrefetchBudget;
      // An item's metadata, and the data the puller will want of it.
      auto add = [&](const ItemMetadata& item) {
        ToWire(item, *out->add_items());
        if (item.tombstone || budget == 0 || KnowsAllOf(session->peer_known, item)) return;
        budget -= std::min(budget, AddUnitData(*session->provider, item, budget, *out));
      };
      if (scan.changes_only()) {
        // What the puller lacks, looking through a bounded number of items,
        // until the answer is full (in items, or in data to send with them).
        ItemId cursor = first;
        uint64_t examined = 0;
        uint32_t added = 0;
        ItemId through = last;
        std::vector<ItemMetadata> chunk;
        bool full = false;
        while (!full && examined < kMaxExamine) {
          chunk.clear();
          MESHSYNC_RETURN_IF_ERROR(session->snapshot->ScanItems(cursor, last, kMaxScan, chunk));
          const bool end = chunk.size() < kMaxScan || (!chunk.empty() && chunk.back().id == last);
          for (const ItemMetadata& item : chunk) {
            ++examined;
            through = item.id;
            if (!KnowsAllOf(session->peer_known, item)) {
              add(item);
              full = ++added == scan.limit() || budget == 0;
              if (full) break;
            }
          }
          if (end && (!full || through == chunk.back().id)) {
            through = last;
            break;
          }
          if (!full) cursor = through.Next();
        }
        out->set_through(IdBytes(through));
        out->set_examined(examined);
      } else {
        std::vector<ItemMetadata> items;
        MESHSYNC_RETURN_IF_ERROR(session->snapshot->ScanItems(first, last, scan.limit(), items));
        for (const ItemMetadata& item : items) add(item);
      }
      return response;
    }
    case wire::Request::kLoadData: {
      const wire::LoadData& load = request.load_data();
      MESHSYNC_ASSIGN_OR_RETURN(Session * session, Find(load.session()));
      MESHSYNC_ASSIGN_OR_RETURN(ItemId id, ParseItemId(load.id()));
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, session->snapshot->GetItem(id));
      if (!item.has_value() || item->tombstone) return NotFoundError("no such item");
      std::vector<ChangeUnitId> units(load.units().begin(), load.units().end());
      std::vector<UnitData> data;
      MESHSYNC_RETURN_IF_ERROR(session->provider->LoadChangeData(*item, units, data));
      for (UnitData& unit : data) {
        wire::UnitData* entry = response.mutable_data_loaded()->add_units();
        entry->set_unit(unit.unit);
        entry->set_data(std::move(unit.data));
      }
      response.mutable_data_loaded();
      return response;
    }
    case wire::Request::kOpenData: {
      const wire::OpenData& open = request.open_data();
      MESHSYNC_ASSIGN_OR_RETURN(Session * session, Find(open.session()));
      if (session->readers.size() >= kMaxReaders) {
        return UnavailableError("too many open data handles");
      }
      MESHSYNC_ASSIGN_OR_RETURN(ItemId id, ParseItemId(open.id()));
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, session->snapshot->GetItem(id));
      if (!item.has_value() || item->tombstone) return NotFoundError("no such item");
      MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<DataReader> reader,
                                session->provider->OpenData(*item, open.unit()));
      uint64_t handle = next_handle_++;
      response.mutable_data_opened()->set_handle(handle);
      response.mutable_data_opened()->set_size(reader->size());
      session->readers.emplace(handle, std::move(reader));
      return response;
    }
    case wire::Request::kReadData: {
      const wire::ReadData& read = request.read_data();
      MESHSYNC_ASSIGN_OR_RETURN(Session * session, Find(read.session()));
      auto it = session->readers.find(read.handle());
      if (it == session->readers.end()) return InvalidArgumentError("no such data handle");
      DataReader& reader = *it->second;
      std::string* data = response.mutable_data_read()->mutable_data();
      Status status;
      if (read.length() > kMaxRead) {
        status = InvalidArgumentError("read of more than 4 MiB");
      } else if (read.offset() > reader.size() || read.length() > reader.size() - read.offset()) {
        status = InvalidArgumentError("read past the end of the data");
      } else if (read.length() > 0) {
        data->resize(read.length());
        status = reader.ReadAt(read.offset(), std::span<char>(data->data(), data->size()));
      }
      if (status.ok() && read.verify()) status = reader.Verify();
      if (read.close()) session->readers.erase(it);
      MESHSYNC_RETURN_IF_ERROR(status);
      return response;
    }
    case wire::Request::kCloseSession: {
      sessions_.erase(request.close_session().session());
      return response;
    }
    case wire::Request::CALL_NOT_SET:
      break;
  }
  return InvalidArgumentError("unknown request");
}

}  // namespace meshsync::node
