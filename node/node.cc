#include "node/node.h"

#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "files/folder.h"
#include "meshsync/atomic_file.h"
#include "meshsync/sync.h"
#include "node/api.h"
#include "node/asio.h"
#include "node/bundle.h"
#include "node/config.h"
#include "node/connection.h"
#include "node/folder_feed.h"
#include "node/identity.h"
#include "node/json.h"
#include "node/log.h"
#include "node/remote.h"
#include "node/watcher.h"

namespace meshsync::node {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kRescan = std::chrono::seconds(60);         // the watcher's safety net
constexpr auto kDebounce = std::chrono::milliseconds(10);  // let a burst of events settle
constexpr auto kRetry = std::chrono::seconds(2);           // after a pull left items behind
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr int kMaxBackoffSeconds = 30;
constexpr size_t kActivityKept = 500;   // recent events served by /api/activity
constexpr size_t kPathsPerEvent = 100;  // paths listed in one activity event

std::string Str(std::string_view s) { return std::string(s); }

uint64_t NowMillis() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// A folder of this node as a place to find chunks in (OtherFolderChunks).
struct FolderPlace {
  files::Folder::ReaderSpec spec;
  std::string metadata_path;
};

// The node's other folders, as places for a pull to find chunks in before
// it asks the peer. Each is read as a peer's session reads it, through a
// snapshot of its metadata, opened when a fetch first asks; its chunk index
// is built on first use too.
class OtherFolderChunks final : public files::ChunkFinder {
 public:
  explicit OtherFolderChunks(std::vector<FolderPlace> places) : places_(std::move(places)) {}

  bool empty() const { return places_.empty(); }

  bool Has(const files::Chunk& chunk) override {
    Open();
    for (Reader& r : readers_) {
      if (r.reader->HasChunk(chunk)) return true;
    }
    return false;
  }

  bool Read(const files::Chunk& chunk, std::span<char> out) override {
    Open();
    for (Reader& r : readers_) {
      if (r.reader->ReadChunk(chunk, out)) return true;
    }
    return false;
  }

 private:
  void Open() {
    if (opened_) return;
    opened_ = true;
    for (const FolderPlace& place : places_) {
      auto store = OpenSqliteSnapshot(place.metadata_path, files::kProviderName);
      if (!store.ok()) continue;  // not found there, then
      auto reader = files::OpenFolderReader(place.spec, **store);
      if (!reader.ok()) continue;
      readers_.push_back(Reader{std::move(*store), std::move(*reader)});
    }
  }

  struct Reader {
    std::unique_ptr<MetadataStore> store;
    std::unique_ptr<files::FileProvider> reader;  // reads `store`: destroyed first
  };
  std::vector<FolderPlace> places_;
  std::vector<Reader> readers_;
  bool opened_ = false;
};

}  // namespace

class FolderRunner;

class Node::Impl {
 public:
  Impl(std::string home, Identity identity)
      : home_(std::move(home)),
        identity_(std::move(identity)),
        acceptor_(io_),
        dial_timer_(io_),
        config_timer_(io_),
        signals_(io_, SIGINT, SIGTERM),
        pool_(2) {}
  ~Impl();

  Status Init();
  Status Run();
  void Stop();

  // For folder runners (any thread).
  std::shared_ptr<Connection> PeerFor(const std::string& folder, const DeviceId& peer);
  void Announce(const std::string& folder);
  bool stopping() const { return stopping_; }
  const std::string& home() const { return home_; }
  std::string PeerName(const DeviceId& id);
  // The node's folders other than `except`.
  std::vector<FolderPlace> OtherFolders(const std::string& except);
  // Records an event for the activity feed and the event stream. `fields`
  // is the inside of a JSON object ("\"folder\": \"x\", ...").
  void Activity(const std::string& type, const std::string& fields);

 private:
  struct Link {
    std::shared_ptr<Connection> connection;
    std::shared_ptr<SessionServer> server;
    std::set<std::string> offered;  // folders the peer shares with us
    bool hello = false;
  };
  struct Dial {
    bool dialing = false;
    int backoff = 1;
    SteadyClock::time_point next = SteadyClock::now();
  };

  Status LoadConfig();
  // Returns the folders it could not open: (id, why).
  std::vector<std::pair<std::string, Status>> ApplyConfig(Config config);  // I/O thread
  void Accept();
  void OnAccepted(std::shared_ptr<TlsStream> stream);
  void DialPeers();
  void DialOne(const PeerConfig& peer);
  void Established(std::shared_ptr<TlsStream> stream, const DeviceId& peer, bool outgoing);
  void OnMessage(const std::shared_ptr<Connection>& connection, wire::Envelope&& envelope);
  void OnClosed(const std::shared_ptr<Connection>& connection, const Status& reason);
  void SendClusterConfig(const std::shared_ptr<Connection>& connection);
  void RecordPending(const DeviceId& peer, const std::string& folder);
  // A hub relays for every device it trusts: it accepts the folders they
  // offer (under HOME/folders/ID) and shares each with all who offer it.
  bool HubAccept(const DeviceId& peer, const std::string& folder);
  void WatchConfig();
  // An edit of the configuration (I/O thread), from the API or the hub:
  // made on the file's current contents, saved, applied. Returns what
  // `edit` says it did.
  Result<std::string> EditConfig(const std::function<Result<std::string>(Config&)>& edit);
  FolderRunner* RunnerFor(const std::string& folder);
  void AddRoutes();
  Result<std::string> StatusJson();
  Result<std::string> FoldersJson();
  Result<std::string> PeersJson();
  Result<std::string> ConflictsJson(const std::string& query);
  void ImportBundleFile(const std::string& path, const ApiServer::Reply& reply);
  Result<std::string> ExportBundleFile(const std::string& folder, const DeviceId& target,
                                       const std::string& path);

  std::string home_;
  Identity identity_;
  asio::io_context io_;
  std::shared_ptr<asio::ssl::context> tls_server_;
  std::shared_ptr<asio::ssl::context> tls_client_;
  tcp::acceptor acceptor_;
  asio::steady_timer dial_timer_;
  asio::steady_timer config_timer_;
  asio::signal_set signals_;
  asio::thread_pool pool_;
  std::atomic<bool> stopping_{false};
  struct timespec config_mtime_ {};
  std::shared_ptr<ApiServer> api_;
  SteadyClock::time_point started_ = SteadyClock::now();
  std::mutex activity_mu_;
  std::deque<std::string> activity_;

  std::mutex mu_;  // guards everything below
  Config config_;
  std::map<DeviceId, Link> links_;
  std::map<DeviceId, Dial> dials_;
  std::vector<std::unique_ptr<FolderRunner>> runners_;
  std::vector<std::thread> retiring_;  // stopping removed folders' runners
};

// One folder: all its writes happen on this runner's thread.
class FolderRunner {
 public:
  FolderRunner(Node::Impl& node, FolderConfig config) : node_(node), config_(std::move(config)) {}
  ~FolderRunner() { StopAndJoin(); }

  Status Open() {
    files::FolderOptions options;
    auto folder = files::Folder::Open(config_.path, options);
    if (!folder.ok()) return folder.status().WithContext("folder '" + config_.id + "'");
    folder_ = std::move(*folder);
    // Watched before the first scan, so that what changes during it is
    // scanned again (where it changed) by the first pass of Loop.
    auto watcher =
        Watcher::Start(folder_->real_path(), ".meshsync",
                       [this](Watcher::Changes changes) { Changed(std::move(changes)); });
    if (watcher.ok()) {
      watcher_ = std::move(*watcher);
    } else {
      Log("folder " + config_.id + ": " + Str(watcher.status().message()) +
          "; relying on the periodic rescan");
    }
    // The metadata must exist before a peer asks for a snapshot of it.
    MESHSYNC_RETURN_IF_ERROR(folder_->replica().DetectChanges());
    thread_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  void StopAndJoin() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    watcher_.reset();
    if (thread_.joinable()) thread_.join();
  }

  // Asks for a full scan.
  void RequestScan() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      scan_ = full_scan_ = true;
    }
    cv_.notify_all();
  }

  // From the watcher: a scan of where things changed.
  void Changed(Watcher::Changes changes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      scan_ = true;
      full_scan_ |= changes.everything;
      for (const ChangeScope::Place& place : changes.places) {
        places_[place.path] |= place.recursive;
      }
    }
    cv_.notify_all();
  }

  // Runs `job` on this folder's thread, between scans and pulls; `job` is
  // called with false instead if the folder stops first.
  void Post(std::function<void(bool run)> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stop_) {
        jobs_.push_back(std::move(job));
        job = nullptr;
      }
    }
    if (job) job(false);
    cv_.notify_all();
  }

  // Applies a bundle (see bundle.h), as a pull from its exporter would.
  Result<std::string> Import(Bundle& bundle) {
    Knowledge before = folder_->replica().state().knowledge;
    const files::FileCounters counted = folder_->provider().counters();
    auto report =
        ImportBundle(bundle, *folder_, true, [this] { return node_.stopping() || stop_; });
    folder_->provider().TakeActions();
    if (!report.ok()) {
      index_trusted_ = false;
      return report.status();
    }
    const DirectionReport& r = report->a_to_b;
    Status recorded =
        RecordKnown(node_.home(), config_.id, bundle.from(), bundle.exporter_knowledge());
    if (!recorded.ok()) Log("cannot record what a peer knows: " + recorded.ToString());
    uint64_t from_bundle = folder_->provider().counters().bytes_fetched - counted.bytes_fetched;
    std::string summary = "\"folder\": " + JsonString(config_.id) +
                          ", \"peer\": " + JsonString(bundle.from().ToString()) +
                          ", \"created\": " + std::to_string(r.created) +
                          ", \"updated\": " + std::to_string(r.updated) +
                          ", \"deleted\": " + std::to_string(r.deleted) +
                          ", \"conflicts\": " + std::to_string(r.conflicts) +
                          ", \"errors\": " + std::to_string(r.errors.size()) +
                          ", \"bytes_from_bundle\": " + std::to_string(from_bundle);
    Log("folder " + config_.id + ": imported a bundle from " + node_.PeerName(bundle.from()) +
        ": " + std::to_string(r.created) + " created, " + std::to_string(r.updated) + " updated, " +
        std::to_string(r.deleted) + " deleted, " + std::to_string(r.conflicts) + " conflicts");
    node_.Activity("bundle-imported", summary);
    if (!(folder_->replica().state().knowledge == before)) node_.Announce(config_.id);
    return "{" + summary + "}";
  }

  void RequestPull(const DeviceId& peer) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      pulls_[peer] = SteadyClock::now();
    }
    cv_.notify_all();
  }

  const std::string& id() const { return config_.id; }
  const std::string& path() const { return config_.path; }
  files::Folder& folder() { return *folder_; }

  // For the session server: what a peer may read. By value: a session may
  // outlive this runner (a folder removed from the configuration while a
  // peer reads it).
  ServedFolder Serve() { return ServeFolder(*folder_); }

  // The folder as a FeedSync endpoint, for this folder's thread (Post).
  FolderFeed FeedEndpoint(const std::string& by) {
    files::Folder::ReaderSpec spec = folder_->reader_spec();
    return FolderFeed(spec.real_path, std::move(spec.ignore),
                      FeedMirrorPath(node_.home(), config_.id), by,
                      "/api/feed?folder=" + FeedIdForPath(config_.id));
  }

 private:
  void Loop() {
    auto next_rescan = SteadyClock::now() + kRescan;
    while (true) {
      bool scan = false;
      bool full = false;
      ChangeScope scope;
      std::vector<DeviceId> pulls;
      {
        std::unique_lock<std::mutex> lock(mu_);
        auto wake = next_rescan;
        for (const auto& [peer, at] : pulls_) wake = std::min(wake, at);
        cv_.wait_until(lock, wake, [&] {
          if (stop_ || scan_ || !jobs_.empty()) return true;
          auto now = SteadyClock::now();
          for (const auto& [peer, at] : pulls_)
            if (at <= now) return true;
          return now >= next_rescan;
        });
        if (stop_) {
          for (auto& job : jobs_) job(false);
          jobs_.clear();
          return;
        }
        if (!jobs_.empty()) {
          auto jobs = std::move(jobs_);
          jobs_.clear();
          lock.unlock();
          for (auto& job : jobs) job(true);
          lock.lock();
        }
        if (scan_) {
          // A burst of events (a save is several) is one scan.
          lock.unlock();
          std::this_thread::sleep_for(kDebounce);
          lock.lock();
          scan_ = false;
          scan = true;
        }
        auto now = SteadyClock::now();
        if (now >= next_rescan) scan = full_scan_ = true;
        for (auto it = pulls_.begin(); it != pulls_.end();) {
          if (it->second <= now) {
            pulls.push_back(it->first);
            it = pulls_.erase(it);
          } else {
            ++it;
          }
        }
      }
      bool changed = false;
      // Before a pull too: a local edit not yet scanned must be known
      // before a peer's change to the same file is applied, or it would
      // conflict late. A watcher that sees every directory has told us of
      // any; without one, only a full scan can tell.
      const bool watching = watcher_ != nullptr && watcher_->complete();
      if (!pulls.empty() && !watching) scan = true;
      if (scan) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          full = full_scan_ || !index_trusted_ || !watching;
          for (auto& [path, recursive] : places_) scope.places.push_back({path, recursive});
          places_.clear();
          full_scan_ = false;
        }
        if (full) next_rescan = SteadyClock::now() + kRescan;
        Knowledge before = folder_->replica().state().knowledge;
        // A scoped scan compares with the index the last one left, which
        // holds only while every scan and pull since succeeded.
        Status status =
            full ? folder_->replica().DetectChanges() : folder_->replica().DetectChangesIn(scope);
        index_trusted_ = status.ok();
        if (!status.ok()) Log("folder " + config_.id + ": scan failed: " + status.ToString());
        changed = !(folder_->replica().state().knowledge == before);
        for (const std::string& problem : folder_->provider().problems()) {
          Log("folder " + config_.id + ": " + problem);
        }
        if (changed) {
          Log("folder " + config_.id + ": local changes found");
          node_.Activity("local-change", "\"folder\": " + JsonString(config_.id));
        }
      }
      for (const DeviceId& peer : pulls) {
        if (node_.stopping()) return;
        changed |= Pull(peer);
      }
      if (changed) node_.Announce(config_.id);
    }
  }

  // Returns whether the folder changed.
  bool Pull(const DeviceId& peer) {
    std::shared_ptr<Connection> connection = node_.PeerFor(config_.id, peer);
    if (connection == nullptr) return false;
    Knowledge before = folder_->replica().state().knowledge;
    const files::FileCounters counted = folder_->provider().counters();
    auto started = SteadyClock::now();
    SyncReport report;
    // Chunks the node has in its other folders are not asked for.
    OtherFolderChunks elsewhere(node_.OtherFolders(config_.id));
    if (!elsewhere.empty()) folder_->provider().set_chunk_finder(&elsewhere);
    Status status = [&]() -> Status {
      MESHSYNC_ASSIGN_OR_RETURN(
          std::unique_ptr<RemoteSource> remote,
          RemoteSource::Open(connection, config_.id, folder_->replica().state()));
      const std::string& kind = remote->replica().state().provider_name;
      if (kind != folder_->replica().state().provider_name) {
        return FailedPreconditionError("peer's folder holds '" + kind + "' items, not files");
      }
      SyncOptions options;
      options.direction = SyncDirection::kAToB;
      options.detect_changes = false;
      options.should_cancel = [this] { return node_.stopping() || stop_; };
      MESHSYNC_ASSIGN_OR_RETURN(report,
                                Synchronize(remote->replica(), folder_->replica(), options));
      return Status::Ok();
    }();
    folder_->provider().set_chunk_finder(nullptr);
    std::string who = node_.PeerName(peer);
    const files::FileCounters& counters = folder_->provider().counters();
    const uint64_t fetched = counters.bytes_fetched - counted.bytes_fetched;
    const uint64_t reused = counters.bytes_reused - counted.bytes_reused;
    const uint64_t resumed = counters.bytes_resumed - counted.bytes_resumed;
    if (!status.ok()) {
      index_trusted_ = false;
      Log("folder " + config_.id + ": pull from " + who + " failed: " + status.ToString());
      if (status.IsTransient() && !connection->closed()) ScheduleRetry(peer);
      return !(folder_->replica().state().knowledge == before);
    }
    const DirectionReport& r = report.a_to_b;
    auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started).count();
    if (r.created + r.updated + r.deleted + r.conflicts + r.skipped > 0) {
      Log("folder " + config_.id + ": pulled from " + who + ": " + std::to_string(r.created) +
          " created, " + std::to_string(r.updated) + " updated, " + std::to_string(r.deleted) +
          " deleted, " + std::to_string(r.conflicts) + " conflicts, " + std::to_string(r.bytes) +
          " bytes (" + std::to_string(fetched) + " fetched, " + std::to_string(reused) +
          " found here, " + std::to_string(resumed) + " of them resumed) in " +
          std::to_string(millis) + " ms");
    }
    for (const ItemError& error : r.errors) {
      Log("folder " + config_.id + ": not applied (retrying): " + error.status.ToString());
    }
    std::vector<files::FileAction> actions = folder_->provider().TakeActions();
    if (!actions.empty() || r.conflicts > 0 || !r.errors.empty()) {
      std::string paths;
      for (size_t i = 0; i < actions.size() && i < kPathsPerEvent; ++i) {
        paths += std::string(i > 0 ? ", " : "") + "{\"action\": " + JsonString(actions[i].verb) +
                 ", \"path\": " + JsonString(actions[i].path) + "}";
      }
      node_.Activity("pulled", "\"folder\": " + JsonString(config_.id) +
                                   ", \"peer\": " + JsonString(peer.ToString()) +
                                   ", \"created\": " + std::to_string(r.created) +
                                   ", \"updated\": " + std::to_string(r.updated) +
                                   ", \"deleted\": " + std::to_string(r.deleted) +
                                   ", \"conflicts\": " + std::to_string(r.conflicts) +
                                   ", \"bytes\": " + std::to_string(r.bytes) +
                                   ", \"bytes_fetched\": " + std::to_string(fetched) +
                                   ", \"bytes_reused\": " + std::to_string(reused) +
                                   ", \"bytes_resumed\": " + std::to_string(resumed) +
                                   ", \"errors\": " + std::to_string(r.errors.size()) +
                                   ", \"changes\": [" + paths + "]");
      for (const files::FileAction& action : actions) {
        if (action.verb != "conflict-copy") continue;
        node_.Activity("conflict", "\"folder\": " + JsonString(config_.id) +
                                       ", \"path\": " + JsonString(action.path) +
                                       ", \"detail\": " + JsonString(action.detail));
      }
    }
    if (!r.errors.empty() || r.local_versions > 0) ScheduleRetry(peer);
    return !(folder_->replica().state().knowledge == before);
  }

  void ScheduleRetry(const DeviceId& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    scan_ = full_scan_ = true;
    auto at = SteadyClock::now() + kRetry;
    auto [it, inserted] = pulls_.emplace(peer, at);
    if (!inserted) it->second = std::max(it->second, at);
  }

  Node::Impl& node_;
  FolderConfig config_;
  std::unique_ptr<files::Folder> folder_;
  std::unique_ptr<Watcher> watcher_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  bool scan_ = false;
  bool full_scan_ = false;              // the next scan looks at everything
  std::map<std::string, bool> places_;  // where the watcher saw changes -> recursive
  bool index_trusted_ = true;  // Loop's own: no scan, pull or import failed since the last scan
  std::map<DeviceId, SteadyClock::time_point> pulls_;  // peer -> not before
  std::vector<std::function<void(bool run)>> jobs_;
};

Node::Impl::~Impl() {
  Stop();
  std::vector<std::unique_ptr<FolderRunner>> runners;
  std::vector<std::thread> retiring;
  {
    std::lock_guard<std::mutex> lock(mu_);
    runners.swap(runners_);
    retiring.swap(retiring_);
  }
  runners.clear();  // joins their threads
  for (std::thread& thread : retiring) thread.join();
  pool_.join();
}

Status Node::Impl::LoadConfig() {
  MESHSYNC_ASSIGN_OR_RETURN(Config config, Config::Load(home_ + "/config.toml"));
  struct stat st;
  if (::stat((home_ + "/config.toml").c_str(), &st) == 0) config_mtime_ = st.st_mtim;
  std::lock_guard<std::mutex> lock(mu_);
  config_ = std::move(config);
  return Status::Ok();
}

Status Node::Impl::Init() {
  MESHSYNC_RETURN_IF_ERROR(LoadConfig());
  MESHSYNC_ASSIGN_OR_RETURN(tls_server_, MakeTlsContext(identity_, true));
  MESHSYNC_ASSIGN_OR_RETURN(tls_client_, MakeTlsContext(identity_, false));
  std::string host, port;
  SplitAddress(config_.listen, host, port);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgumentError("listen address '" + config_.listen + "': " + ec.message());
  tcp::endpoint endpoint(address, static_cast<uint16_t>(std::stoi(port)));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return UnavailableError("cannot listen on " + config_.listen + ": " + ec.message());
  auto bound = acceptor_.local_endpoint();
  std::string listening = (bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                   : bound.address().to_string()) +
                          ":" + std::to_string(bound.port());
  // Where peers (and tests, with port 0) find this node.
  MESHSYNC_RETURN_IF_ERROR(WriteFileAtomically(home_ + "/listening", listening + "\n", 0644));
  Log("node " + identity_.id.ToString() + " listening on " + listening);
  api_ = std::make_shared<ApiServer>(io_, config_.api_key);
  AddRoutes();
  MESHSYNC_ASSIGN_OR_RETURN(std::string api, api_->Listen(config_.api));
  MESHSYNC_RETURN_IF_ERROR(WriteFileAtomically(home_ + "/api-listening", api + "\n", 0644));
  Log("API on http://" + api + "/api/status");
  for (const FolderConfig& folder : config_.folders) {
    auto runner = std::make_unique<FolderRunner>(*this, folder);
    Status status = runner->Open();
    if (!status.ok()) return status;
    Log("folder " + folder.id + " at " + folder.path + ", shared with " +
        std::to_string(folder.shared_with.size()) + " device(s)");
    runners_.push_back(std::move(runner));
  }
  return Status::Ok();
}

Status Node::Impl::Run() {
  signals_.async_wait([this](boost::system::error_code ec, int signal) {
    if (ec) return;
    Log(std::string("received ") + (signal == SIGTERM ? "SIGTERM" : "SIGINT") + ", stopping");
    Stop();
  });
  Accept();
  DialPeers();
  WatchConfig();
  io_.run();
  // Sessions end between batches once stopping_ is set; join them before
  // the connections they use go away.
  std::vector<std::unique_ptr<FolderRunner>> runners;
  {
    std::lock_guard<std::mutex> lock(mu_);
    runners.swap(runners_);
  }
  runners.clear();
  Log("stopped");
  return Status::Ok();
}

void Node::Impl::Stop() {
  if (stopping_.exchange(true)) return;
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    dial_timer_.cancel();
    config_timer_.cancel();
    signals_.cancel();
    if (api_ != nullptr) api_->Close();
    std::vector<std::shared_ptr<Connection>> connections;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, link] : links_) connections.push_back(link.connection);
    }
    for (auto& connection : connections) connection->Close(UnavailableError("node is stopping"));
    // Let the goodbyes go out, then end the loop.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    timer->async_wait([this, timer](boost::system::error_code) { io_.stop(); });
  });
}

std::string Node::Impl::PeerName(const DeviceId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  const PeerConfig* peer = config_.FindPeer(id);
  std::string name = peer != nullptr && !peer->name.empty() ? peer->name + " " : "";
  return name + "(" + id.ShortName() + ")";
}

void Node::Impl::Accept() {
  auto stream = std::make_shared<TlsStream>(io_, *tls_server_);
  acceptor_.async_accept(stream->lowest_layer(), [this, stream](boost::system::error_code ec) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (!ec) OnAccepted(stream);
    Accept();
  });
}

void Node::Impl::OnAccepted(std::shared_ptr<TlsStream> stream) {
  boost::system::error_code ignored;
  auto endpoint = stream->lowest_layer().remote_endpoint(ignored);
  std::string from = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  auto timer = std::make_shared<asio::steady_timer>(io_, kHandshakeTimeout);
  timer->async_wait([stream](boost::system::error_code ec) {
    if (ec) return;  // the handshake finished first
    boost::system::error_code unused;
    stream->lowest_layer().close(unused);
  });
  stream->async_handshake(
      asio::ssl::stream_base::server, [this, stream, timer, from](boost::system::error_code ec) {
        timer->cancel();
        if (ec) {
          Log("refused connection from " + from + ": TLS handshake failed: " + ec.message());
          return;
        }
        auto peer = PeerDeviceId(*stream);
        if (!peer.ok()) {
          Log("refused connection from " + from + ": " + Str(peer.status().message()));
          return;
        }
        bool trusted;
        {
          std::lock_guard<std::mutex> lock(mu_);
          trusted = config_.FindPeer(*peer) != nullptr;
        }
        if (!trusted) {
          Log("refused connection from " + from + ": unknown device " + peer->ToString() +
              " (add it with `meshsync peer add " + peer->ToString() + " ADDRESS`)");
          Activity("refused", "\"device\": " + JsonString(peer->ToString()) + ", \"address\": " +
                                  JsonString(from) + ", \"reason\": \"unknown device\"");
          boost::system::error_code unused;
          stream->lowest_layer().close(unused);
          return;
        }
        Established(stream, *peer, false);
      });
}

void Node::Impl::DialPeers() {
  if (stopping_) return;
  std::vector<PeerConfig> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = SteadyClock::now();
    for (const PeerConfig& peer : config_.peers) {
      if (peer.address == "dynamic" || links_.count(peer.id) > 0) continue;
      Dial& dial = dials_[peer.id];
      if (dial.dialing || dial.next > now) continue;
      dial.dialing = true;
      due.push_back(peer);
    }
  }
  for (const PeerConfig& peer : due) DialOne(peer);
  dial_timer_.expires_after(std::chrono::milliseconds(500));
  dial_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) DialPeers();
  });
}

void Node::Impl::DialOne(const PeerConfig& peer) {
  std::string host, port;
  SplitAddress(peer.address, host, port);
  auto resolver = std::make_shared<tcp::resolver>(io_);
  auto stream = std::make_shared<TlsStream>(io_, *tls_client_);
  DeviceId expected = peer.id;
  auto failed = [this, expected](const std::string& why, bool log) {
    std::lock_guard<std::mutex> lock(mu_);
    Dial& dial = dials_[expected];
    dial.dialing = false;
    if (log) Log("cannot connect to " + expected.ShortName() + ": " + why);
    dial.next = SteadyClock::now() + std::chrono::seconds(dial.backoff);
    dial.backoff = std::min(dial.backoff * 2, kMaxBackoffSeconds);
  };
  resolver->async_resolve(
      host, port,
      [this, resolver, stream, expected, failed](boost::system::error_code ec,
                                                 tcp::resolver::results_type results) {
        if (ec) return failed(ec.message(), true);
        asio::async_connect(
            stream->lowest_layer(), results,
            [this, stream, expected, failed](boost::system::error_code connect_ec,
                                             const tcp::endpoint&) {
              if (connect_ec) return failed(connect_ec.message(), false);  // offline: quiet
              auto timer = std::make_shared<asio::steady_timer>(io_, kHandshakeTimeout);
              timer->async_wait([stream](boost::system::error_code timer_ec) {
                if (timer_ec) return;
                boost::system::error_code ignored;
                stream->lowest_layer().close(ignored);
              });
              stream->async_handshake(
                  asio::ssl::stream_base::client,
                  [this, stream, expected, failed, timer](boost::system::error_code tls_ec) {
                    timer->cancel();
                    if (tls_ec) return failed("TLS handshake failed: " + tls_ec.message(), true);
                    auto presented = PeerDeviceId(*stream);
                    if (!presented.ok()) return failed(Str(presented.status().message()), true);
                    if (!(*presented == expected)) {
                      boost::system::error_code ignored;
                      stream->lowest_layer().close(ignored);
                      return failed("it presented device id " + presented->ToString() +
                                        ", not the one configured",
                                    true);
                    }
                    {
                      std::lock_guard<std::mutex> lock(mu_);
                      Dial& dial = dials_[expected];
                      dial.dialing = false;
                      dial.backoff = 1;
                    }
                    Established(stream, expected, true);
                  });
            });
      });
}

void Node::Impl::Established(std::shared_ptr<TlsStream> stream, const DeviceId& peer,
                             bool outgoing) {
  auto connection = std::make_shared<Connection>(std::move(stream), peer, outgoing);
  std::shared_ptr<Connection> replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = links_.find(peer);
    if (it != links_.end()) {
      // Both dialled at once: keep the connection the smaller id started,
      // which both sides agree on.
      const DeviceId& old_initiator = it->second.connection->outgoing() ? identity_.id : peer;
      const DeviceId& new_initiator = outgoing ? identity_.id : peer;
      if (old_initiator < new_initiator) {
        connection->Close(UnavailableError("already connected"));
        return;
      }
      replaced = it->second.connection;
      links_.erase(it);
    }
    Link& link = links_[peer];
    link.connection = connection;
    link.server = std::make_shared<SessionServer>(
        [this, peer](const std::string& folder) -> Result<ServedFolder> {
          std::lock_guard<std::mutex> config_lock(mu_);
          const FolderConfig* config = config_.FindFolder(folder);
          if (config == nullptr || !config_.SharedWith(*config, peer)) {
            return NotFoundError("folder '" + folder + "' is not shared with this device");
          }
          FolderRunner* runner = RunnerFor(folder);
          if (runner == nullptr) return UnavailableError("folder '" + folder + "' is not open yet");
          ServedFolder served = runner->Serve();
          served.on_session = [home = home_, folder, peer](const std::string& known) {
            Status recorded = RecordKnown(home, folder, peer, known);
            if (!recorded.ok()) Log("cannot record what a peer knows: " + recorded.ToString());
          };
          return served;
        });
  }
  if (replaced != nullptr) replaced->Close(UnavailableError("replaced by a newer connection"));
  Log("connected to " + PeerName(peer) + " at " + connection->remote_address() +
      (outgoing ? " (outgoing)" : " (incoming)"));
  Activity("connected", "\"peer\": " + JsonString(peer.ToString()) +
                            ", \"address\": " + JsonString(connection->remote_address()));
  Connection::Callbacks callbacks;
  callbacks.on_message = [this](const std::shared_ptr<Connection>& c, wire::Envelope&& e) {
    OnMessage(c, std::move(e));
  };
  callbacks.on_closed = [this](const std::shared_ptr<Connection>& c, const Status& reason) {
    OnClosed(c, reason);
  };
  connection->Start(std::move(callbacks));
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol(kProtocolVersion);
  {
    std::lock_guard<std::mutex> lock(mu_);
    hello.mutable_hello()->set_device_name(config_.name);
    hello.mutable_hello()->set_hub(config_.hub);
  }
  hello.mutable_hello()->set_client_version("meshsync 0.1.0");
  connection->Send(hello);
  SendClusterConfig(connection);
}

void Node::Impl::SendClusterConfig(const std::shared_ptr<Connection>& connection) {
  wire::Envelope envelope;
  wire::ClusterConfig* cluster = envelope.mutable_cluster_config();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const FolderConfig& folder : config_.folders) {
      if (config_.SharedWith(folder, connection->peer())) cluster->add_folders()->set_id(folder.id);
    }
  }
  connection->Send(envelope);
}

void Node::Impl::OnMessage(const std::shared_ptr<Connection>& connection,
                           wire::Envelope&& envelope) {
  const DeviceId peer = connection->peer();
  std::shared_ptr<SessionServer> server;
  bool hello;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = links_.find(peer);
    if (it == links_.end() || it->second.connection != connection) return;  // replaced
    server = it->second.server;
    hello = it->second.hello;
  }
  if (!hello && !envelope.has_hello()) {
    connection->Close(InvalidArgumentError("expected a hello first"));
    return;
  }
  switch (envelope.body_case()) {
    case wire::Envelope::kHello: {
      if (envelope.hello().protocol() != kProtocolVersion) {
        connection->Close(FailedPreconditionError(
            "peer speaks protocol " + std::to_string(envelope.hello().protocol()) + ", this node " +
            std::to_string(kProtocolVersion)));
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      links_[peer].hello = true;
      connection->peer_name = envelope.hello().device_name();
      connection->peer_hub = envelope.hello().hub();
      return;
    }
    case wire::Envelope::kClusterConfig: {
      std::set<std::string> offered;
      for (const wire::FolderOffer& folder : envelope.cluster_config().folders()) {
        offered.insert(folder.id());
      }
      std::vector<FolderRunner*> pull;
      std::vector<std::string> pending;
      {
        std::lock_guard<std::mutex> lock(mu_);
        Link& link = links_[peer];
        for (const std::string& folder : offered) {
          const FolderConfig* config = config_.FindFolder(folder);
          if (config == nullptr) {
            pending.push_back(folder);
          } else if (!config_.SharedWith(*config, peer) && config_.hub) {
            pending.push_back(folder);  // HubAccept shares it
          } else if (!config_.SharedWith(*config, peer)) {
            Log("peer " + peer.ShortName() + " shares folder '" + folder +
                "', which is not shared with it here (`meshsync folder share " + folder + " " +
                peer.ToString() + "`)");
          } else if (FolderRunner* runner = RunnerFor(folder)) {
            pull.push_back(runner);
          }
        }
        link.offered = std::move(offered);
      }
      for (const std::string& folder : pending) {
        if (!HubAccept(peer, folder)) RecordPending(peer, folder);
      }
      for (FolderRunner* runner : pull) runner->RequestPull(peer);
      return;
    }
    case wire::Envelope::kIndexChanged: {
      FolderRunner* runner = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        const FolderConfig* config = config_.FindFolder(envelope.index_changed().folder());
        if (config != nullptr && config_.SharedWith(*config, peer)) {
          runner = RunnerFor(config->id);
        }
      }
      if (runner != nullptr) runner->RequestPull(peer);
      return;
    }
    case wire::Envelope::kRequest: {
      asio::post(pool_, [server, connection, request = std::move(*envelope.mutable_request())] {
        wire::Envelope reply;
        *reply.mutable_response() = server->Handle(request);
        connection->Send(std::move(reply));
      });
      return;
    }
    default:
      connection->Close(InvalidArgumentError("unexpected message"));
      return;
  }
}

void Node::Impl::OnClosed(const std::shared_ptr<Connection>& connection, const Status& reason) {
  const DeviceId peer = connection->peer();
  bool current = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = links_.find(peer);
    if (it != links_.end() && it->second.connection == connection) {
      links_.erase(it);
      current = true;
      Dial& dial = dials_[peer];
      dial.next = SteadyClock::now() + std::chrono::seconds(dial.backoff);
      dial.backoff = std::min(dial.backoff * 2, kMaxBackoffSeconds);
    }
  }
  if (current) {
    Log("disconnected from " + PeerName(peer) + ": " + Str(reason.message()));
    Activity("disconnected", "\"peer\": " + JsonString(peer.ToString()) +
                                 ", \"reason\": " + JsonString(reason.message()));
  }
}

void Node::Impl::RecordPending(const DeviceId& peer, const std::string& folder) {
  std::string path = home_ + "/pending.toml";
  auto pending = LoadPending(path);
  std::vector<PendingFolder> list = pending.ok() ? *pending : std::vector<PendingFolder>();
  for (const PendingFolder& entry : list) {
    if (entry.folder == folder && entry.device == peer) return;  // already recorded
  }
  PendingFolder entry;
  entry.folder = folder;
  entry.device = peer;
  entry.offered_millis = NowMillis();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const PeerConfig* config = config_.FindPeer(peer)) entry.device_name = config->name;
  }
  list.push_back(entry);
  Status status = SavePending(path, list);
  Activity("invitation",
           "\"folder\": " + JsonString(folder) + ", \"device\": " + JsonString(peer.ToString()));
  Log("peer " + peer.ShortName() + " offers folder '" + folder +
      "', which is not configured here: pending (accept with `meshsync folder add PATH --id " +
      folder + "` and `meshsync folder share " + folder + " " + peer.ToString() + "`)" +
      (status.ok() ? "" : "; " + status.ToString()));
}

bool Node::Impl::HubAccept(const DeviceId& peer, const std::string& folder) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!config_.hub) return false;
  }
  // The id becomes a directory name: only a safe alphabet is accepted.
  bool safe = !folder.empty() && folder != "." && folder != "..";
  for (char c : folder)
    safe &= std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  if (!safe) {
    Log("hub: folder id '" + folder + "' is not a safe directory name; left pending");
    return false;
  }
  auto done = EditConfig([&](Config& next) -> Result<std::string> {
    if (FolderConfig* existing = next.FindFolder(folder)) {
      existing->shared_with.push_back(peer);
    } else {
      std::string path = home_ + "/folders";
      ::mkdir(path.c_str(), 0700);
      path += "/" + folder;
      if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
        return UnavailableError("cannot create " + path + ": " + std::strerror(errno));
      }
      next.folders.push_back(FolderConfig{folder, path, {peer}});
    }
    return "hub: relaying folder '" + folder + "' for " + peer.ShortName();
  });
  if (!done.ok()) {
    Log("hub: folder '" + folder + "' left pending: " + done.status().ToString());
    return false;
  }
  Activity("hub-accepted",
           "\"folder\": " + JsonString(folder) + ", \"device\": " + JsonString(peer.ToString()));
  return true;
}

Result<std::string> Node::Impl::EditConfig(
    const std::function<Result<std::string>(Config&)>& edit) {
  // The file is the truth: a hand edit the watcher has not reloaded yet is
  // kept, not overwritten with the older configuration in memory.
  std::string path = home_ + "/config.toml";
  auto save = [&](Config& config) -> Status {
    {
      // A file removed by hand must not take the API key away from the CLI.
      std::lock_guard<std::mutex> lock(mu_);
      if (config.api_key.empty()) config.api_key = config_.api_key;
      if (config.name.empty()) config.name = config_.name;
    }
    MESHSYNC_RETURN_IF_ERROR(config.Save(path));
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) config_mtime_ = st.st_mtim;
    return Status::Ok();
  };
  MESHSYNC_ASSIGN_OR_RETURN(Config next, Config::Load(path));
  const Config before = next;
  MESHSYNC_ASSIGN_OR_RETURN(std::string done, edit(next));
  Config undo = next;
  MESHSYNC_RETURN_IF_ERROR(save(next));
  auto failed = ApplyConfig(std::move(next));
  // A folder this edit adds that the node cannot open is not added: the
  // edit fails, with the reason, rather than leave a folder in the file that
  // nothing syncs. (A folder added by hand that fails is logged, as on a
  // reload, and not this edit's error.)
  std::string why;
  for (const auto& [id, status] : failed) {
    if (before.FindFolder(id) != nullptr) continue;
    if (!undo.RemoveFolder(id).ok()) continue;
    why += (why.empty() ? "" : "; ") + status.ToString();
  }
  if (why.empty()) {
    Log("config: " + done);
    return done;
  }
  MESHSYNC_RETURN_IF_ERROR(save(undo));
  ApplyConfig(std::move(undo));
  Log("config: not changed: " + why);
  return FailedPreconditionError(why);
}

void Node::Impl::WatchConfig() {
  config_timer_.expires_after(std::chrono::seconds(1));
  config_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    struct stat st;
    std::string path = home_ + "/config.toml";
    if (::stat(path.c_str(), &st) == 0 && (st.st_mtim.tv_sec != config_mtime_.tv_sec ||
                                           st.st_mtim.tv_nsec != config_mtime_.tv_nsec)) {
      config_mtime_ = st.st_mtim;
      auto config = Config::Load(path);
      if (!config.ok()) {
        Log("config not reloaded: " + config.status().ToString());
      } else {
        ApplyConfig(std::move(*config));
      }
    }
    WatchConfig();
  });
}

std::vector<std::pair<std::string, Status>> Node::Impl::ApplyConfig(Config config) {
  std::vector<std::pair<std::string, Status>> failed;
  std::vector<std::shared_ptr<Connection>> drop, keep;
  std::vector<FolderConfig> added;
  std::vector<std::unique_ptr<FolderRunner>> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, link] : links_) {
      (config.FindPeer(id) == nullptr ? drop : keep).push_back(link.connection);
    }
    for (const FolderConfig& folder : config.folders) {
      const FolderConfig* old = config_.FindFolder(folder.id);
      if (old == nullptr || old->path != folder.path) added.push_back(folder);
    }
    for (auto it = runners_.begin(); it != runners_.end();) {
      const FolderConfig* now = config.FindFolder((*it)->id());
      if (now == nullptr || now->path != (*it)->path()) {
        removed.push_back(std::move(*it));
        it = runners_.erase(it);
      } else {
        ++it;
      }
    }
    config_ = std::move(config);
  }
  // Stopped off the I/O thread: a runner in the middle of a pull waits for
  // answers that only the I/O thread delivers.
  if (!removed.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    retiring_.emplace_back([runners = std::move(removed)]() mutable { runners.clear(); });
  }
  for (const FolderConfig& folder : added) {
    auto runner = std::make_unique<FolderRunner>(*this, folder);
    Status status = runner->Open();
    if (!status.ok()) {
      Log("cannot open folder: " + status.ToString());
      failed.emplace_back(folder.id, std::move(status));
      continue;
    }
    Log("folder " + folder.id + " at " + folder.path + " added");
    std::lock_guard<std::mutex> lock(mu_);
    runners_.push_back(std::move(runner));
  }
  for (auto& connection : drop) connection->Close(UnavailableError("peer removed from config"));
  for (auto& connection : keep) SendClusterConfig(connection);
  // A folder newly shared with a peer that already offers it: pull now.
  std::vector<std::pair<FolderRunner*, DeviceId>> pulls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, link] : links_) {
      for (const std::string& folder : link.offered) {
        const FolderConfig* shared = config_.FindFolder(folder);
        FolderRunner* runner = RunnerFor(folder);
        if (shared != nullptr && runner != nullptr && config_.SharedWith(*shared, id)) {
          pulls.emplace_back(runner, id);
        }
      }
    }
  }
  for (auto& [runner, peer] : pulls) runner->RequestPull(peer);
  Log("configuration reloaded");
  return failed;
}

FolderRunner* Node::Impl::RunnerFor(const std::string& folder) {
  for (auto& runner : runners_)
    if (runner->id() == folder) return runner.get();
  return nullptr;
}

std::vector<FolderPlace> Node::Impl::OtherFolders(const std::string& except) {
  std::vector<FolderPlace> places;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& runner : runners_) {
    if (runner->id() == except) continue;
    places.push_back(FolderPlace{runner->folder().reader_spec(), runner->folder().metadata_path()});
  }
  return places;
}

std::shared_ptr<Connection> Node::Impl::PeerFor(const std::string& folder, const DeviceId& peer) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = links_.find(peer);
  if (it == links_.end() || it->second.offered.count(folder) == 0) return nullptr;
  const FolderConfig* config = config_.FindFolder(folder);
  if (config == nullptr || !config_.SharedWith(*config, peer)) return nullptr;
  return it->second.connection;
}

void Node::Impl::Announce(const std::string& folder) {
  wire::Envelope envelope;
  envelope.mutable_index_changed()->set_folder(folder);
  std::vector<std::shared_ptr<Connection>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, link] : links_) {
      if (link.offered.count(folder) > 0) targets.push_back(link.connection);
    }
  }
  for (auto& connection : targets) connection->Send(envelope);
}

void Node::Impl::Activity(const std::string& type, const std::string& fields) {
  std::string json = "{\"time\": " + std::to_string(NowMillis()) +
                     ", \"type\": " + JsonString(type) + (fields.empty() ? "" : ", " + fields) +
                     "}";
  {
    std::lock_guard<std::mutex> lock(activity_mu_);
    activity_.push_back(json);
    while (activity_.size() > kActivityKept) activity_.pop_front();
  }
  if (api_ != nullptr) api_->Publish(type, json);
}

void Node::Impl::AddRoutes() {
  api_->AddRoute("/api/status", [this](const std::string&) { return StatusJson(); });
  api_->AddRoute("/api/folders", [this](const std::string&) { return FoldersJson(); });
  api_->AddRoute("/api/peers", [this](const std::string&) { return PeersJson(); });
  // The CLI's `peer` and `folder` edits, while the daemon runs.
  auto edit_route = [this](const std::string& path, auto edit) {
    api_->AddRoute(
        "POST", path, [this, edit](const ApiServer::Request& request, ApiServer::Reply reply) {
          auto done = EditConfig([&](Config& config) { return edit(request.body, config); });
          if (!done.ok()) return reply(done.status());
          Activity("config-changed", "\"change\": " + JsonString(*done));
          reply("{\"message\": " + JsonString(*done) + "}");
        });
  };
  auto field = [](const std::string& body, const char* name) {
    return JsonStringField(body, name);
  };
  auto device_field = [field](const std::string& body, const char* name) -> Result<DeviceId> {
    MESHSYNC_ASSIGN_OR_RETURN(std::string text, field(body, name));
    return DeviceId::Parse(text);
  };
  edit_route(
      "/api/peers/add",
      [this, field, device_field](const std::string& body, Config& config) -> Result<std::string> {
        PeerConfig peer;
        MESHSYNC_ASSIGN_OR_RETURN(peer.id, device_field(body, "id"));
        MESHSYNC_ASSIGN_OR_RETURN(peer.address, field(body, "address"));
        if (auto name = field(body, "name"); name.ok()) peer.name = *name;
        return config.AddPeer(std::move(peer), identity_.id);
      });
  edit_route("/api/peers/remove",
             [device_field](const std::string& body, Config& config) -> Result<std::string> {
               MESHSYNC_ASSIGN_OR_RETURN(DeviceId id, device_field(body, "id"));
               return config.RemovePeer(id);
             });
  edit_route("/api/folders/add",
             [field](const std::string& body, Config& config) -> Result<std::string> {
               MESHSYNC_ASSIGN_OR_RETURN(std::string id, field(body, "id"));
               MESHSYNC_ASSIGN_OR_RETURN(std::string path, field(body, "path"));
               struct stat st;
               if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
                 return NotFoundError(path + ": no such folder");
               }
               return config.AddFolder(id, path);
             });
  for (bool share : {true, false}) {
    edit_route(share ? "/api/folders/share" : "/api/folders/unshare",
               [field, device_field, share](const std::string& body,
                                            Config& config) -> Result<std::string> {
                 MESHSYNC_ASSIGN_OR_RETURN(std::string folder, field(body, "folder"));
                 MESHSYNC_ASSIGN_OR_RETURN(DeviceId id, device_field(body, "device"));
                 return config.ShareFolder(folder, id, share);
               });
  }
  edit_route("/api/folders/remove",
             [field](const std::string& body, Config& config) -> Result<std::string> {
               MESHSYNC_ASSIGN_OR_RETURN(std::string id, field(body, "id"));
               return config.RemoveFolder(id);
             });
  // Off the I/O thread: reading a store, or applying a bundle, takes time.
  api_->AddRoute("GET", "/api/conflicts",
                 [this](const ApiServer::Request& request, ApiServer::Reply reply) {
                   asio::post(pool_, [this, query = request.query, reply = std::move(reply)] {
                     reply(ConflictsJson(query));
                   });
                 });
  api_->AddRoute("POST", "/api/bundle/import",
                 [this](const ApiServer::Request& request, ApiServer::Reply reply) {
                   auto path = JsonStringField(request.body, "path");
                   if (!path.ok()) return reply(path.status());
                   asio::post(pool_, [this, path = *path, reply = std::move(reply)] {
                     ImportBundleFile(path, reply);
                   });
                 });
  api_->AddRoute("POST", "/api/bundle/export",
                 [this](const ApiServer::Request& request, ApiServer::Reply reply) {
                   auto folder = JsonStringField(request.body, "folder");
                   auto target = JsonStringField(request.body, "for");
                   auto path = JsonStringField(request.body, "path");
                   for (const Status& status : {folder.status(), target.status(), path.status()}) {
                     if (!status.ok()) return reply(status);
                   }
                   auto device = DeviceId::Parse(*target);
                   if (!device.ok()) return reply(device.status());
                   asio::post(pool_, [this, folder = *folder, device = *device, path = *path,
                                      reply = std::move(reply)] {
                     reply(ExportBundleFile(folder, device, path));
                   });
                 });
  // A folder as a FeedSync feed, read and merged on the folder's thread.
  auto feed_route = [this](bool post) {
    return [this, post](const ApiServer::Request& request, ApiServer::Reply reply) {
      std::optional<std::string> folder = QueryParam(request.query, "folder");
      if (!folder) return reply(InvalidArgumentError("name the folder: ?folder=ID"));
      std::optional<uint64_t> since;
      if (std::optional<std::string> text = QueryParam(request.query, "since")) {
        uint64_t value = 0;
        auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
        if (ec != std::errc() || end != text->data() + text->size()) {
          return reply(InvalidArgumentError("since must be a number from sx:sharing until"));
        }
        since = value;
      }
      std::lock_guard<std::mutex> lock(mu_);
      FolderRunner* runner = RunnerFor(*folder);
      if (runner == nullptr) return reply(NotFoundError("no folder '" + *folder + "'"));
      runner->Post([runner, post, since, by = identity_.id.ToString(), body = request.body,
                    reply](bool run) {
        if (!run) return reply(UnavailableError("the folder stopped"));
        FolderFeed feed = runner->FeedEndpoint(by);
        reply(post ? feed.Accept(body) : feed.Publish(since));
        if (post) runner->RequestScan();
      });
    };
  };
  api_->AddRoute("GET", "/api/feed", feed_route(false), "application/atom+xml");
  api_->AddRoute("POST", "/api/feed", feed_route(true));
  api_->AddRoute("/api/activity", [this](const std::string&) -> Result<std::string> {
    std::lock_guard<std::mutex> lock(activity_mu_);
    std::string out = "[";
    for (size_t i = 0; i < activity_.size(); ++i) out += (i > 0 ? ",\n" : "") + activity_[i];
    return out + "]";
  });
}

Result<std::string> Node::Impl::StatusJson() {
  std::lock_guard<std::mutex> lock(mu_);
  auto uptime =
      std::chrono::duration_cast<std::chrono::seconds>(SteadyClock::now() - started_).count();
  return "{\"id\": " + JsonString(identity_.id.ToString()) +
         ", \"name\": " + JsonString(config_.name) +
         ", \"hub\": " + (config_.hub ? "true" : "false") +
         ", \"uptime_seconds\": " + std::to_string(uptime) +
         ", \"folders\": " + std::to_string(config_.folders.size()) +
         ", \"peers\": " + std::to_string(config_.peers.size()) +
         ", \"connected\": " + std::to_string(links_.size()) + "}";
}

Result<std::string> Node::Impl::FoldersJson() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out = "{\"folders\": [";
  for (size_t i = 0; i < config_.folders.size(); ++i) {
    const FolderConfig& folder = config_.folders[i];
    out += std::string(i > 0 ? ", " : "") + "{\"id\": " + JsonString(folder.id) +
           ", \"path\": " + JsonString(folder.path) + ", \"shared_with\": [";
    for (size_t k = 0; k < folder.shared_with.size(); ++k) {
      const DeviceId& peer = folder.shared_with[k];
      auto link = links_.find(peer);
      bool active = link != links_.end() && link->second.offered.count(folder.id) > 0;
      out += std::string(k > 0 ? ", " : "") + "{\"device\": " + JsonString(peer.ToString()) +
             ", \"syncing\": " + (active ? "true" : "false") + "}";
    }
    out += "]}";
  }
  out += "], \"pending\": [";
  auto pending = LoadPending(home_ + "/pending.toml");
  if (pending.ok()) {
    bool first = true;
    for (const PendingFolder& entry : *pending) {
      if (config_.FindFolder(entry.folder) != nullptr) continue;
      out += std::string(first ? "" : ", ") + "{\"folder\": " + JsonString(entry.folder) +
             ", \"device\": " + JsonString(entry.device.ToString()) +
             ", \"offered\": " + std::to_string(entry.offered_millis) + "}";
      first = false;
    }
  }
  return out + "]}";
}

Result<std::string> Node::Impl::PeersJson() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out = "{\"peers\": [";
  for (size_t i = 0; i < config_.peers.size(); ++i) {
    const PeerConfig& peer = config_.peers[i];
    auto link = links_.find(peer.id);
    bool connected = link != links_.end();
    out += std::string(i > 0 ? ", " : "") + "{\"id\": " + JsonString(peer.id.ToString()) +
           ", \"name\": " + JsonString(peer.name) + ", \"address\": " + JsonString(peer.address) +
           ", \"connected\": " + (connected ? "true" : "false");
    if (connected) {
      out += ", \"remote_address\": " + JsonString(link->second.connection->remote_address()) +
             ", \"device_name\": " + JsonString(link->second.connection->peer_name);
    }
    out += "}";
  }
  return out + "]}";
}

Result<std::string> Node::Impl::ConflictsJson(const std::string& query) {
  const std::string folder_id = QueryParam(query, "folder").value_or("");
  if (folder_id.empty()) return InvalidArgumentError("name the folder: /api/conflicts?folder=ID");
  std::string metadata;
  files::Folder::ReaderSpec spec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    FolderRunner* runner = RunnerFor(folder_id);
    if (runner == nullptr) return NotFoundError("no folder '" + folder_id + "'");
    metadata = runner->folder().metadata_path();
    spec = runner->folder().reader_spec();
  }
  // From a snapshot, so the folder's own thread is not disturbed.
  MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<MetadataStore> snapshot,
                            OpenSqliteSnapshot(metadata, files::kProviderName));
  MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<files::FileProvider> reader,
                            files::OpenFolderReader(spec, *snapshot));
  MESHSYNC_RETURN_IF_ERROR(reader->LoadItems());  // for PathOf
  MESHSYNC_ASSIGN_OR_RETURN(std::vector<ConflictRecord> conflicts, snapshot->ListConflicts());
  std::string out = "{\"folder\": " + JsonString(folder_id) + ", \"conflicts\": [";
  for (size_t i = 0; i < conflicts.size(); ++i) {
    const ConflictRecord& record = conflicts[i];
    std::optional<std::string> path = reader->PathOf(record.item);
    out += std::string(i > 0 ? ", " : "") + "{\"id\": " + std::to_string(record.id) +
           ", \"item\": " + JsonString(record.item.ToHex()) +
           ", \"path\": " + (path.has_value() ? JsonString(*path) : "null") +
           ", \"kind\": " + JsonString(ConflictKindName(record.kind)) +
           ", \"loser_is_delete\": " + (record.loser_is_delete ? "true" : "false") +
           ", \"detected\": " + std::to_string(record.detected_millis) + "}";
  }
  return out + "]}";
}

void Node::Impl::ImportBundleFile(const std::string& path, const ApiServer::Reply& reply) {
  auto opened = Bundle::Open(path);  // reads and checks it all: not on a folder's thread
  if (!opened.ok()) return reply(opened.status());
  std::shared_ptr<Bundle> bundle = std::move(*opened);
  std::lock_guard<std::mutex> lock(mu_);
  auto folder = CheckBundle(config_, *bundle);
  if (!folder.ok()) return reply(folder.status());
  FolderRunner* runner = RunnerFor(folder->id);
  if (runner == nullptr) return reply(UnavailableError("folder '" + folder->id + "' is not open"));
  runner->Post([runner, bundle, reply](bool run) {
    if (!run) return reply(UnavailableError("the folder stopped before the bundle was applied"));
    reply(runner->Import(*bundle));
  });
}

Result<std::string> Node::Impl::ExportBundleFile(const std::string& folder, const DeviceId& target,
                                                 const std::string& path) {
  ServedFolder served;
  {
    std::lock_guard<std::mutex> lock(mu_);
    FolderRunner* runner = RunnerFor(folder);
    if (runner == nullptr) return NotFoundError("no folder '" + folder + "'");
    served = runner->Serve();
  }
  MESHSYNC_ASSIGN_OR_RETURN(std::string known, LoadKnown(home_, folder, target));
  MESHSYNC_ASSIGN_OR_RETURN(BundleStats stats,
                            ExportBundle(served, folder, identity_, target, known, path));
  Log("folder " + folder + ": exported a bundle for " + PeerName(target) + " to " + path);
  return BundleStatsJson(folder, stats);
}

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Node::~Node() = default;

Result<std::unique_ptr<Node>> Node::Open(const std::string& home) {
  MESHSYNC_ASSIGN_OR_RETURN(Identity identity, Identity::LoadOrCreate(home));
  auto impl = std::make_unique<Impl>(home, std::move(identity));
  MESHSYNC_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Status Node::Run() { return impl_->Run(); }
void Node::Stop() { impl_->Stop(); }

}  // namespace meshsync::node
