// A replica on another node, as the sync engine sees it.
//
// Every node pulls: to sync folder F with peer P, the node runs the engine's
// one-way session with P's replica of F as the source and its own as the
// destination, and P does the same the other way. So the engine stays the
// one that syncs two local folders, and only the source side is remote:
//   * RemoteSource (client) is a read-only MetadataStore and Provider whose
//     calls become requests on the connection: ScanItems for each window
//     (the server sends the unit data of the items this node lacks with it,
//     so a window costs one round trip), OpenData/ReadData for bulk data,
//     read ahead several blocks at a time.
//   * SessionServer (server) answers them from a snapshot of the folder's
//     metadata (OpenSqliteSnapshot), so a session sees one consistent state
//     while the folder goes on syncing with others.
// Everything a peer sends is checked: ids, replica indexes, unit order,
// sizes; a malformed answer fails the session, never the node.
#ifndef MESHSYNC_NODE_REMOTE_H_
#define MESHSYNC_NODE_REMOTE_H_

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "meshsync/metadata_store.h"
#include "meshsync/provider.h"
#include "meshsync/sync.h"
#include "node/connection.h"

namespace meshsync::node {

// What carries a RemoteSource's requests to the replica that answers them:
// a Connection to the peer, or an offline bundle (bundle.h) read from a file.
class Transport {
 public:
  virtual ~Transport() = default;
  // Sends `request` and waits for its answer (or the peer's error).
  virtual Result<wire::Response> Call(wire::Request request) = 0;
  // The same, without waiting.
  virtual std::future<Result<wire::Response>> CallAsync(wire::Request request) = 0;
};

// The protocol's forms of ids and items, shared by the session server and
// bundles.
std::string IdBytes(const Id128& id);
void ToWire(const ItemMetadata& item, wire::Item& out);
// Appends the unit data of `item` (or the error loading it) to `out`, and
// the bulk data of its small units while `bulk_budget` bytes last (the last
// of them may go past it); returns about how many bytes that added.
size_t AddUnitData(Provider& provider, const ItemMetadata& item, size_t bulk_budget,
                   wire::ItemsScanned& out);

class RemoteSource {
 public:
  // Opens a session on `folder` of the peer behind `connection`, announcing
  // `local_state`'s knowledge (so the peer can send what it lacks up front).
  static Result<std::unique_ptr<RemoteSource>> Open(std::shared_ptr<Connection> connection,
                                                    const std::string& folder,
                                                    const ReplicaState& local_state);
  static Result<std::unique_ptr<RemoteSource>> Open(std::shared_ptr<Transport> transport,
                                                    const std::string& folder,
                                                    const ReplicaState& local_state);
  ~RemoteSource();

  Replica& replica() { return *replica_; }

 private:
  class Store;
  class Source;
  RemoteSource() = default;
  std::shared_ptr<Transport> connection_;
  uint64_t session_ = 0;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Source> provider_;
  std::unique_ptr<Replica> replica_;
};

// What a server needs to serve one folder.
struct ServedFolder {
  std::string metadata_path;  // the folder's SQLite metadata store
  std::string provider_name;
  // Opens a provider over `store` for reading (LoadChangeData, OpenData).
  std::function<Result<std::unique_ptr<Provider>>(MetadataStore& store)> open_provider;
  // Told what the peer announced it knows when it opens a session (so a
  // bundle for it can leave that out); may be empty.
  std::function<void(const std::string& known)> on_session;
};

// Serves the sessions of one connection. Thread-safe (one request at a time).
class SessionServer {
 public:
  // Resolves a folder id for the peer: kNotFound or kPermissionDenied-like
  // errors when the folder is unknown or not shared with it.
  using Resolver = std::function<Result<ServedFolder>(const std::string& folder)>;

  explicit SessionServer(Resolver resolver);
  ~SessionServer();

  wire::Response Handle(const wire::Request& request);

 private:
  struct Session;
  Result<wire::Response> Dispatch(const wire::Request& request);
  Result<Session*> Find(uint64_t id);

  Resolver resolver_;
  std::mutex mu_;
  uint64_t next_session_ = 1;
  uint64_t next_handle_ = 1;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_REMOTE_H_
