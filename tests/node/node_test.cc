// The node's parts that need no peer (device ids, configuration, frames),
// and a node under attack by a peer it trusts: garbage, an oversized frame,
// a truncated message, a change naming ../x, a chunk whose bytes do not
// match its hash. Each is refused, the node keeps serving, nothing is
// written.
#include "node/node.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "files/chunker.h"
#include "files/file_provider.h"
#include "node/asio.h"
#include "node/config.h"
#include "node/connection.h"
#include "node/identity.h"
#include "node/remote.h"
#include "node/wire.h"

namespace meshsync::node {
namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/meshsync-node-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// --- device ids ------------------------------------------------------------

TEST(DeviceIdTest, PrintsAndParsesBack) {
  TempDir dir;
  auto identity = Identity::LoadOrCreate(dir.path() + "/home");
  ASSERT_TRUE(identity.ok()) << identity.status().ToString();
  std::string text = identity->id.ToString();
  EXPECT_EQ(text.size(), 63u);  // 8 groups of 7, 7 dashes
  auto parsed = DeviceId::Parse(text);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, identity->id);
  // Case and separators do not matter.
  std::string loose;
  for (char c : text) loose.push_back(c == '-' ? ' ' : static_cast<char>(std::tolower(c)));
  EXPECT_EQ(*DeviceId::Parse(loose), identity->id);
  // The identity is stable across loads; the key is private to its owner.
  auto again = Identity::LoadOrCreate(dir.path() + "/home");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, identity->id);
  struct stat st;
  ASSERT_EQ(stat(identity->key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(DeviceIdTest, CatchesTypos) {
  TempDir dir;
  std::string text = Identity::LoadOrCreate(dir.path())->id.ToString();
  for (size_t at : {0u, 9u, 30u, 62u}) {
    std::string typo = text;
    typo[at] = typo[at] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(DeviceId::Parse(typo).ok()) << typo;
  }
  EXPECT_FALSE(DeviceId::Parse(text.substr(0, 55)).ok());
  EXPECT_FALSE(DeviceId::Parse(text + "A").ok());
  EXPECT_FALSE(DeviceId::Parse("not a device id at all, 0189!").ok());
  EXPECT_FALSE(DeviceId::Parse("").ok());
}

TEST(DeviceIdTest, HalfAnIdentityIsAnError) {
  TempDir dir;
  ASSERT_TRUE(Identity::LoadOrCreate(dir.path()).ok());
  fs::remove(dir.path() + "/key.pem");
  auto identity = Identity::LoadOrCreate(dir.path());
  ASSERT_FALSE(identity.ok());
  EXPECT_NE(identity.status().message().find("key.pem"), std::string::npos);
}

// --- configuration ---------------------------------------------------------

TEST(ConfigTest, RoundTrips) {
  TempDir dir;
  DeviceId peer_id = Identity::LoadOrCreate(dir.path() + "/peer")->id;
  Config config;
  config.name = "laptop";
  config.listen = "127.0.0.1:0";
  config.hub = true;
  config.peers.push_back(PeerConfig{peer_id, "phone", "[::1]:22000"});
  config.folders.push_back(FolderConfig{"photos", "/home/me/Photos", {peer_id}});
  std::string path = dir.path() + "/config.toml";
  ASSERT_TRUE(config.Save(path).ok());
  auto loaded = Config::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->name, "laptop");
  EXPECT_EQ(loaded->listen, "127.0.0.1:0");
  EXPECT_TRUE(loaded->hub);
  ASSERT_EQ(loaded->peers.size(), 1u);
  EXPECT_EQ(loaded->peers[0].id, peer_id);
  EXPECT_EQ(loaded->peers[0].address, "[::1]:22000");
  ASSERT_NE(loaded->FindFolder("photos"), nullptr);
  EXPECT_TRUE(loaded->SharedWith(*loaded->FindFolder("photos"), peer_id));
  // A missing file is an empty configuration.
  EXPECT_TRUE(Config::Load(dir.path() + "/none.toml").ok());
}

TEST(ConfigTest, ErrorsNameTheLine) {
  TempDir dir;
  std::string path = dir.path() + "/config.toml";
  struct Case {
    std::string text;
    std::string line;
  };
  for (const Case& c : std::vector<Case>{
           {"[node]\nname = \"x\"\nlisten = \"nowhere\"\n", ":3:"},
           {"[node]\nname = \n", ":2:"},
           {"[node]\nhub = \"yes\"\n", ":2:"},
           {"\n\n[[peer]]\nid = \"ABC\"\n", ":4:"},
           {"[[folder]]\nid = \"x\"\npath = \"relative\"\n", ":1:"},
           {"[mystery]\n", ":1:"},
       }) {
    WriteFile(path, c.text);
    auto config = Config::Load(path);
    ASSERT_FALSE(config.ok()) << c.text;
    EXPECT_NE(config.status().message().find(path + c.line), std::string::npos)
        << config.status().ToString();
  }
}

// --- frames ----------------------------------------------------------------

TEST(WireTest, FramesRoundTripCompressedOrNot) {
  for (size_t size : {0u, 100u, 100000u}) {
    wire::Envelope envelope;
    envelope.mutable_close()->set_reason(std::string(size, 'x'));
    auto frame = EncodeFrame(envelope);
    ASSERT_TRUE(frame.ok());
    uint8_t flags = 0;
    auto body = DecodeFrameHeader(std::string_view(*frame).substr(0, kFrameHeaderSize), flags);
    ASSERT_TRUE(body.ok());
    ASSERT_EQ(*body, frame->size() - kFrameHeaderSize);
    EXPECT_EQ((flags & kFlagCompressed) != 0, size > kCompressAbove);
    wire::Envelope decoded;
    ASSERT_TRUE(
        DecodeFrameBody(std::string_view(*frame).substr(kFrameHeaderSize), flags, decoded).ok());
    EXPECT_EQ(decoded.close().reason(), envelope.close().reason());
  }
}

// A frame split for a gather write (head, then data), as one string.
Result<std::string> SplitFrameBytes(wire::Envelope envelope, size_t* data_size = nullptr) {
  MESHSYNC_ASSIGN_OR_RETURN(SplitFrame frame, EncodeSplitFrame(std::move(envelope)));
  if (data_size != nullptr) *data_size = frame.data.size();
  return frame.head + frame.data;
}

// A kFlagData frame: header, message length, the message, then `data`.
std::string DataFrame(const wire::Envelope& message, const std::string& data,
                      uint32_t claimed_message_size) {
  std::string body = message.SerializeAsString();
  std::string out(kFrameHeaderSize + kDataPrefixSize, '\0');
  uint32_t size = static_cast<uint32_t>(kDataPrefixSize + body.size() + data.size());
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<char>(size >> (24 - 8 * i));
    out[kFrameHeaderSize + i] = static_cast<char>(claimed_message_size >> (24 - 8 * i));
  }
  out[4] = static_cast<char>(kFlagData);
  return out + body + data;
}

Result<wire::Envelope> DecodeWholeFrame(std::string_view frame) {
  uint8_t flags = 0;
  MESHSYNC_ASSIGN_OR_RETURN(size_t size,
                            DecodeFrameHeader(frame.substr(0, kFrameHeaderSize), flags));
  if (size != frame.size() - kFrameHeaderSize) return InvalidArgumentError("size");
  wire::Envelope envelope;
  MESHSYNC_RETURN_IF_ERROR(DecodeFrameBody(frame.substr(kFrameHeaderSize), flags, envelope));
  return envelope;
}

TEST(WireTest, BlockDataTravelsOutsideTheMessage) {
  for (size_t size : {size_t{100}, kDataOutsideAbove, size_t{600000}}) {
    std::string data(size, '\0');
    for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 7 + i / 251);
    wire::Envelope envelope;
    envelope.mutable_response()->set_id(42);
    envelope.mutable_response()->mutable_data_read()->set_data(data);
    size_t outside = 0;
    auto frame = SplitFrameBytes(envelope, &outside);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_EQ(outside, size >= kDataOutsideAbove ? size : 0);
    EXPECT_EQ(((*frame)[4] & kFlagData) != 0, size >= kDataOutsideAbove);
    auto decoded = DecodeWholeFrame(*frame);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(decoded->response().id(), 42u);
    EXPECT_EQ(decoded->response().data_read().data(), data);
  }
  // Anything else is framed as it always was.
  wire::Envelope close;
  close.mutable_close()->set_reason(std::string(10000, 'x'));
  auto frame = SplitFrameBytes(close);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ((*frame)[4] & kFlagData, 0);
  ASSERT_TRUE(DecodeWholeFrame(*frame).ok());
}

TEST(WireTest, RefusesBadDataFrames) {
  wire::Envelope read;
  read.mutable_response()->set_id(1);
  read.mutable_response()->mutable_data_read();
  uint32_t n = static_cast<uint32_t>(read.ByteSizeLong());
  ASSERT_TRUE(DecodeWholeFrame(DataFrame(read, "bytes", n)).ok());
  // The message length runs past the frame.
  EXPECT_FALSE(DecodeWholeFrame(DataFrame(read, "bytes", n + 6)).ok());
  EXPECT_FALSE(DecodeWholeFrame(DataFrame(read, "", 0xffffffffu)).ok());
  // Data for a message that takes none, or that already holds its own.
  wire::Envelope close;
  close.mutable_close()->set_reason("bye");
  EXPECT_FALSE(
      DecodeWholeFrame(DataFrame(close, "bytes", static_cast<uint32_t>(close.ByteSizeLong())))
          .ok());
  wire::Envelope inline_data = read;
  inline_data.mutable_response()->mutable_data_read()->set_data("inline");
  EXPECT_FALSE(DecodeWholeFrame(DataFrame(inline_data, "bytes",
                                          static_cast<uint32_t>(inline_data.ByteSizeLong())))
                   .ok());
  // Shorter than its own message length.
  std::string truncated(kFrameHeaderSize, '\0');
  truncated[3] = 2;
  truncated[4] = static_cast<char>(kFlagData);
  EXPECT_FALSE(DecodeWholeFrame(truncated + "ab").ok());
}

TEST(WireTest, RefusesBadFrames) {
  uint8_t flags = 0;
  EXPECT_FALSE(DecodeFrameHeader(std::string("\xff\xff\xff\xff\x00", 5), flags).ok());
  EXPECT_FALSE(DecodeFrameHeader(std::string("\x00\x00\x00\x01\x80", 5), flags).ok());
  EXPECT_FALSE(DecodeFrameHeader("abc", flags).ok());
  wire::Envelope out;
  EXPECT_FALSE(DecodeFrameBody("\xff\xff\xff garbage", 0, out).ok());
  EXPECT_FALSE(DecodeFrameBody("", 0, out).ok());  // an empty envelope
  EXPECT_FALSE(DecodeFrameBody("not zstd", kFlagCompressed, out).ok());
}

// --- a hostile peer -------------------------------------------------------

// A trusted peer that sends whatever the test says, over real TLS.
class Attacker {
 public:
  Attacker(const Identity& identity, const std::string& address)
      : context_(*MakeTlsContext(identity, false)), stream_(io_, *context_) {
    std::string host, port;
    SplitAddress(address, host, port);
    asio::ip::tcp::resolver resolver(io_);
    asio::connect(stream_.lowest_layer(), resolver.resolve(host, port));
    struct timeval timeout = {20, 0};  // a node that never answers fails the test, not hangs it
    setsockopt(stream_.lowest_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout,
               sizeof(timeout));
    stream_.handshake(asio::ssl::stream_base::client);
  }

  void SendRaw(const std::string& bytes) { asio::write(stream_, asio::buffer(bytes)); }
  void Send(const wire::Envelope& envelope) { SendRaw(*EncodeFrame(envelope)); }

  // The next message, or the error that ended the connection.
  Result<wire::Envelope> Read() {
    char header[kFrameHeaderSize];
    boost::system::error_code ec;
    asio::read(stream_, asio::buffer(header), ec);
    if (ec) return UnavailableError(ec.message());
    uint8_t flags = 0;
    MESHSYNC_ASSIGN_OR_RETURN(size_t size,
                              DecodeFrameHeader(std::string_view(header, sizeof(header)), flags));
    std::string body(size, '\0');
    asio::read(stream_, asio::buffer(body), ec);
    if (ec) return UnavailableError(ec.message());
    wire::Envelope envelope;
    MESHSYNC_RETURN_IF_ERROR(DecodeFrameBody(body, flags, envelope));
    return envelope;
  }

  // Reads until the node closes the connection; returns its Close reason.
  std::string ReadUntilClosed() {
    std::string reason;
    while (true) {
      auto envelope = Read();
      if (!envelope.ok()) {
        EXPECT_EQ(envelope.status().message().find("timed out"), std::string::npos)
            << "the node did not close the connection";
        return reason;
      }
      if (envelope->has_close()) reason = envelope->close().reason();
    }
  }

  void Hello(const std::vector<std::string>& folders) {
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol(kProtocolVersion);
    hello.mutable_hello()->set_device_name("attacker");
    Send(hello);
    wire::Envelope cluster;
    cluster.mutable_cluster_config();
    for (const std::string& folder : folders) {
      cluster.mutable_cluster_config()->add_folders()->set_id(folder);
    }
    Send(cluster);
  }

 private:
  asio::io_context io_;
  std::shared_ptr<asio::ssl::context> context_;
  TlsStream stream_;
};

class HostilePeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = dir_.path() + "/home";
    folder_ = dir_.path() + "/folder";
    fs::create_directories(folder_);
    attacker_ = *Identity::LoadOrCreate(dir_.path() + "/attacker");
    ASSERT_TRUE(Identity::LoadOrCreate(home_).ok());
    Config config;
    config.name = "victim";
    config.listen = "127.0.0.1:0";
    config.api = "127.0.0.1:0";
    config.peers.push_back(PeerConfig{attacker_.id, "attacker", "dynamic"});
    config.folders.push_back(FolderConfig{"docs", folder_, {attacker_.id}});
    ASSERT_TRUE(config.Save(home_ + "/config.toml").ok());
    StartNode();
  }

  void TearDown() override { StopNode(); }

  void StartNode() {
    auto node = Node::Open(home_);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
    thread_ = std::thread([this] { EXPECT_TRUE(node_->Run().ok()); });
    address_ = ReadFile(home_ + "/listening");
    while (!address_.empty() && address_.back() == '\n') address_.pop_back();
  }

  void StopNode() {
    if (node_ != nullptr) node_->Stop();
    if (thread_.joinable()) thread_.join();
    node_.reset();
  }

  // Opens a session on "docs" as a peer that has nothing; returns its id.
  uint64_t OpenSession(Attacker& peer) {
    wire::Envelope request;
    request.mutable_request()->set_id(1);
    request.mutable_request()->mutable_open_session()->set_folder("docs");
    request.mutable_request()->mutable_open_session()->set_known(
        Knowledge().Encode(ReplicaKeyMap()));
    peer.Send(request);
    auto response = ReadResponse(peer);
    EXPECT_TRUE(response.has_session_opened()) << response.error().message();
    return response.session_opened().session();
  }

  wire::Response ReadResponse(Attacker& peer) {
    while (true) {
      auto envelope = peer.Read();
      if (!envelope.ok()) {
        ADD_FAILURE() << envelope.status().ToString();
        return wire::Response();
      }
      if (envelope->has_response()) return envelope->response();
    }
  }

  // Whether the node still serves a well-behaved session.
  void ExpectStillServing() {
    Attacker peer(attacker_, address_);
    peer.Hello({});
    OpenSession(peer);
  }

  std::vector<std::string> FolderEntries() {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(folder_)) {
      std::string name = entry.path().filename().string();
      if (name != ".meshsync") names.push_back(name);
    }
    return names;
  }

  // Plays a source replica holding one file, `name`, whose chunk list says
  // `claimed` and whose bytes are `sent`; answers the node's pull.
  // Serves one file whose chunk list promises `claimed` and whose bytes
  // are `sent`: read with OpenData/ReadData, or `inline` with the scan (as
  // a server that filters and sends small files along does).
  void ServeOneFile(Attacker& peer, const std::string& name, const std::string& claimed,
                    const std::string& sent, bool inline_bytes = false) {
    ReplicaId replica(Id128{0x1234, 0x5678});
    ReplicaKeyMap keys(replica);
    ItemId item(0x42, 0x42);
    Knowledge knowledge;
    files::EntryState state;
    state.kind = files::Kind::kFile;
    state.size = claimed.size();
    state.mtime_ns = 1'000'000'000;
    state.mode = 0644;
    state.chunks.push_back(files::Chunk{static_cast<uint32_t>(claimed.size()),
                                        files::HashBytes(claimed.data(), claimed.size())});
    std::string content = files::EncodeContent(state);
    std::string placement = files::EncodePlacement(ItemId::Min(), name);
    bool closed = false;
    while (!closed) {
      auto envelope = peer.Read();
      if (!envelope.ok()) break;
      if (!envelope->has_request()) continue;
      const wire::Request& request = envelope->request();
      wire::Envelope reply;
      wire::Response* response = reply.mutable_response();
      response->set_id(request.id());
      uint8_t id_bytes[16];
      switch (request.call_case()) {
        case wire::Request::kOpenSession: {
          wire::SessionOpened* opened = response->mutable_session_opened();
          opened->set_session(7);
          opened->set_provider(std::string(files::kProviderName));
          replica.ToBytes(id_bytes);
          opened->add_replica_ids(std::string(reinterpret_cast<char*>(id_bytes), 16));
          ClockVector vector;
          vector.Raise(0, 10);
          knowledge = *Knowledge::FromParts(vector, {}, {});
          opened->set_knowledge(knowledge.Encode(keys));
          opened->set_forgotten(Knowledge().Encode(keys));
          opened->set_item_count(1);
          break;
        }
        case wire::Request::kScanItems: {
          wire::ItemsScanned* items = response->mutable_items_scanned();
          item.ToBytes(id_bytes);
          std::string id(reinterpret_cast<char*>(id_bytes), 16);
          wire::Item* out = items->add_items();
          out->set_id(id);
          out->mutable_created()->set_tick(5);
          out->mutable_updated()->set_tick(5);
          for (uint32_t unit : {files::kContentUnit, files::kPlacementUnit}) {
            wire::UnitVersion* version = out->add_units();
            version->set_unit(unit);
            version->mutable_version()->set_tick(5);
          }
          wire::Prefetched* data = items->add_data();
          data->set_id(id);
          auto* unit = data->add_units();
          unit->set_unit(files::kContentUnit);
          unit->set_data(content);
          unit = data->add_units();
          unit->set_unit(files::kPlacementUnit);
          unit->set_data(placement);
          if (inline_bytes) {
            ItemId::Max().ToBytes(id_bytes);
            items->set_through(std::string(reinterpret_cast<char*>(id_bytes), 16));
            items->set_examined(1);
            unit = data->add_bulk();
            unit->set_unit(files::kContentUnit);
            unit->set_data(sent);
          }
          break;
        }
        case wire::Request::kOpenData:
          if (inline_bytes) {  // the bytes came with the scan: nothing else to read
            StatusToWire(NotFoundError("no reads here"), *response->mutable_error());
            break;
          }
          response->mutable_data_opened()->set_handle(1);
          response->mutable_data_opened()->set_size(sent.size());
          break;
        case wire::Request::kReadData: {
          const wire::ReadData& read = request.read_data();
          if (read.length() > 0) {
            response->mutable_data_read()->set_data(sent.substr(read.offset(), read.length()));
          } else {
            response->mutable_data_read();
          }
          break;
        }
        case wire::Request::kCloseSession:
          closed = true;
          break;
        default:
          response->mutable_error()->set_code(static_cast<int>(StatusCode::kInvalidArgument));
          break;
      }
      peer.Send(reply);
    }
  }

  TempDir dir_;
  std::string home_, folder_, address_;
  Identity attacker_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
};

TEST_F(HostilePeerTest, GarbageBytesDropTheConnection) {
  {
    Attacker peer(attacker_, address_);
    peer.SendRaw(std::string(64, '\x5a'));
    EXPECT_NE(peer.ReadUntilClosed(), "");
  }
  ExpectStillServing();
}

TEST_F(HostilePeerTest, OversizedFrameDropsTheConnection) {
  {
    Attacker peer(attacker_, address_);
    peer.Hello({});
    peer.SendRaw(std::string("\x7f\xff\xff\xff\x00", 5));
    EXPECT_NE(peer.ReadUntilClosed().find("limit"), std::string::npos);
  }
  ExpectStillServing();
}

TEST_F(HostilePeerTest, DataForAMessageThatTakesNoneDropsTheConnection) {
  {
    Attacker peer(attacker_, address_);
    peer.Hello({});
    wire::Envelope changed;
    changed.mutable_index_changed()->set_folder("docs");
    peer.SendRaw(
        DataFrame(changed, std::string(8192, 'd'), static_cast<uint32_t>(changed.ByteSizeLong())));
    EXPECT_NE(peer.ReadUntilClosed().find("takes none"), std::string::npos);
  }
  ExpectStillServing();
}

TEST_F(HostilePeerTest, TruncatedMessageDropsTheConnection) {
  {
    Attacker peer(attacker_, address_);
    peer.Hello({});
    peer.SendRaw(std::string("\x00\x00\x01\x00\x00partial", 12));
  }  // and hang up mid-message
  ExpectStillServing();
}

TEST_F(HostilePeerTest, MessageBeforeHelloDropsTheConnection) {
  {
    Attacker peer(attacker_, address_);
    wire::Envelope changed;
    changed.mutable_index_changed()->set_folder("docs");
    peer.Send(changed);
    EXPECT_NE(peer.ReadUntilClosed().find("hello"), std::string::npos);
  }
  ExpectStillServing();
}

TEST_F(HostilePeerTest, FolderNotSharedIsRefused) {
  Attacker peer(attacker_, address_);
  peer.Hello({});
  wire::Envelope request;
  request.mutable_request()->set_id(9);
  request.mutable_request()->mutable_open_session()->set_folder("private");
  peer.Send(request);
  while (true) {
    auto envelope = peer.Read();
    ASSERT_TRUE(envelope.ok());
    if (!envelope->has_response()) continue;
    EXPECT_EQ(envelope->response().error().code(), static_cast<int>(StatusCode::kNotFound));
    break;
  }
}

TEST_F(HostilePeerTest, NameEscapingTheFolderIsRefused) {
  for (const std::string& name :
       {std::string("../escaped"), std::string("a/b"), std::string(".."), std::string("x\0y", 3)}) {
    Attacker peer(attacker_, address_);
    peer.Hello({"docs"});
    ServeOneFile(peer, name, "payload", "payload");
  }
  EXPECT_FALSE(fs::exists(dir_.path() + "/escaped"));
  EXPECT_TRUE(FolderEntries().empty());
  ExpectStillServing();
}

TEST_F(HostilePeerTest, ChunkNotMatchingItsHashIsRefused) {
  {
    Attacker peer(attacker_, address_);
    peer.Hello({"docs"});
    ServeOneFile(peer, "evil.txt", "the bytes that were promised", "other bytes, same length!!!!");
  }
  EXPECT_FALSE(fs::exists(folder_ + "/evil.txt"));
  EXPECT_TRUE(FolderEntries().empty());
  // The same file with honest bytes is accepted: the refusal was the hash.
  {
    Attacker peer(attacker_, address_);
    peer.Hello({"docs"});
    ServeOneFile(peer, "good.txt", "honest bytes", "honest bytes");
  }
  EXPECT_EQ(ReadFile(folder_ + "/good.txt"), "honest bytes");
}

TEST_F(HostilePeerTest, InlineBytesNotMatchingTheirHashAreRefused) {
  {
    Attacker peer(attacker_, address_);
    peer.Hello({"docs"});
    ServeOneFile(peer, "evil.txt", "the bytes that were promised", "other bytes, same length!!!!",
                 true);
  }
  EXPECT_FALSE(fs::exists(folder_ + "/evil.txt"));
  EXPECT_TRUE(FolderEntries().empty());
  {
    Attacker peer(attacker_, address_);
    peer.Hello({"docs"});
    ServeOneFile(peer, "good.txt", "honest bytes", "honest bytes", true);
  }
  EXPECT_EQ(ReadFile(folder_ + "/good.txt"), "honest bytes");
}

// Not an attack: what the node sends a well-behaved puller. Each answer to
// a scan for what the puller lacks carries the bytes of every small file it
// lists, so a window of files costs one round trip. Answers used to list
// files past their data budget without their bytes, and the puller fetched
// each of those on its own (two round trips each).
TEST_F(HostilePeerTest, ScanAnswersCarryTheBytesOfEverySmallFileTheyList) {
  StopNode();
  constexpr int kFiles = 300;  // 4 MB: more than three answers hold
  for (int i = 0; i < kFiles; ++i) {
    WriteFile(folder_ + "/f" + std::to_string(i),
              std::string(8000 + 37 * i, static_cast<char>('a' + i % 26)));
  }
  StartNode();  // and it scans the folder
  Attacker peer(attacker_, address_);
  peer.Hello({});
  const uint64_t session = OpenSession(peer);
  ItemId first = ItemId::Min();
  int files = 0, answers = 0;
  while (true) {
    wire::Envelope request;
    request.mutable_request()->set_id(2 + answers);
    wire::ScanItems* scan = request.mutable_request()->mutable_scan_items();
    scan->set_session(session);
    scan->set_first(IdBytes(first));
    scan->set_last(IdBytes(ItemId::Max()));
    scan->set_limit(4096);
    scan->set_changes_only(true);
    peer.Send(request);
    wire::Response response = ReadResponse(peer);
    ASSERT_TRUE(response.has_items_scanned()) << response.error().message();
    ++answers;
    const wire::ItemsScanned& items = response.items_scanned();
    for (const wire::Prefetched& data : items.data()) {
      std::optional<files::EntryState> content;
      std::string name;
      for (const wire::UnitData& unit : data.units()) {
        if (unit.unit() == files::kContentUnit) {
          auto decoded = files::DecodeContent(unit.data());
          ASSERT_TRUE(decoded.ok());
          content = *decoded;
        } else if (unit.unit() == files::kPlacementUnit) {
          ItemId parent;
          ASSERT_TRUE(files::DecodePlacement(unit.data(), parent, name).ok());
        }
      }
      if (!content.has_value() || content->kind != files::Kind::kFile) continue;
      ++files;
      ASSERT_EQ(data.bulk_size(), 1) << name << " came without its bytes";
      EXPECT_EQ(data.bulk(0).data(), ReadFile(folder_ + "/" + name)) << name;
    }
    ASSERT_EQ(items.through().size(), 16u);
    ItemId through(Id128::FromBytes(reinterpret_cast<const uint8_t*>(items.through().data())));
    if (through == ItemId::Max()) break;
    ASSERT_FALSE(through < first) << "the scan went back";
    first = through.Next();
  }
  EXPECT_EQ(files, kFiles);
  EXPECT_GT(answers, 1);  // the data budget was reached
}

}  // namespace
}  // namespace meshsync::node
