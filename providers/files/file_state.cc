// Encodings of the file provider's units and provider_state.
#include <cstring>
#include <ctime>

#include "files/file_provider.h"

namespace meshsync::files {
namespace {

constexpr uint8_t kStateFormat = 1;

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutFixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool Varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (data_.empty()) return false;
      uint8_t b = static_cast<uint8_t>(data_[0]);
      data_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      // Canonical only: a last byte of 0 after others is a padded encoding.
      if ((b & 0x80) == 0) return (shift == 0 || b != 0) && (shift < 63 || b <= 1);
    }
    return false;
  }
  bool Fixed64(uint64_t& v) {
    if (data_.size() < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[i])) << (8 * i);
    data_.remove_prefix(8);
    return true;
  }
  bool Bytes(size_t n, std::string_view& out) {
    if (data_.size() < n) return false;
    out = data_.substr(0, n);
    data_.remove_prefix(n);
    return true;
  }
  bool Byte(uint8_t& b) {
    if (data_.empty()) return false;
    b = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

void PutContent(std::string& out, const EntryState& s) {
  out.push_back(static_cast<char>(s.kind));
  if (s.kind == Kind::kFile) {
    PutVarint(out, s.size);
    PutFixed64(out, static_cast<uint64_t>(s.mtime_ns));
    PutVarint(out, s.chunks.size());
    for (const Chunk& c : s.chunks) {
      PutVarint(out, c.length);
      out.append(reinterpret_cast<const char*>(c.hash.data()), c.hash.size());
    }
  } else if (s.kind == Kind::kSymlink) {
    PutVarint(out, s.target.size());
    out += s.target;
  }
}

bool GetContent(Reader& in, EntryState& s) {
  uint8_t kind = 0;
  if (!in.Byte(kind) || kind < 1 || kind > 3) return false;
  s.kind = static_cast<Kind>(kind);
  if (s.kind == Kind::kFile) {
    uint64_t mtime = 0, count = 0;
    if (!in.Varint(s.size) || !in.Fixed64(mtime) || !in.Varint(count)) return false;
    s.mtime_ns = static_cast<int64_t>(mtime);
    if (count > s.size) return false;  // every chunk holds at least a byte
    uint64_t total = 0;
    s.chunks.clear();
    s.chunks.reserve(static_cast<size_t>(std::min<uint64_t>(count, 1 << 16)));
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t length = 0;
      std::string_view hash;
      if (!in.Varint(length) || length == 0 || length > UINT32_MAX || !in.Bytes(32, hash)) {
        return false;
      }
      Chunk chunk;
      chunk.length = static_cast<uint32_t>(length);
      std::memcpy(chunk.hash.data(), hash.data(), 32);
      s.chunks.push_back(chunk);
      total += length;
    }
    if (total != s.size) return false;
  } else if (s.kind == Kind::kSymlink) {
    uint64_t length = 0;
    std::string_view target;
    if (!in.Varint(length) || length == 0 || length > 4096 || !in.Bytes(length, target)) {
      return false;
    }
    if (target.find('\0') != std::string_view::npos) return false;
    s.target = std::string(target);
  }
  return true;
}

}  // namespace

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kFile:
      return "file";
    case Kind::kDirectory:
      return "directory";
    case Kind::kSymlink:
      return "symlink";
  }
  return "unknown";
}

std::string EncodeContent(const EntryState& state) {
  std::string out;
  PutContent(out, state);
  return out;
}

Result<EntryState> DecodeContent(std::string_view data) {
  Reader in(data);
  EntryState state;
  if (!GetContent(in, state) || !in.done()) return DataLossError("malformed file content unit");
  return state;
}

std::string EncodeState(const EntryState& s) {
  std::string out;
  out.push_back(static_cast<char>(kStateFormat));
  PutVarint(out, s.dev);
  PutVarint(out, s.ino);
  PutFixed64(out, static_cast<uint64_t>(s.ctime_ns));
  PutVarint(out, s.mode);
  PutContent(out, s);
  return out;
}

Result<EntryState> DecodeState(std::string_view data) {
  Reader in(data);
  EntryState s;
  uint8_t format = 0;
  uint64_t ctime = 0, mode = 0;
  if (!in.Byte(format) || format != kStateFormat || !in.Varint(s.dev) || !in.Varint(s.ino) ||
      !in.Fixed64(ctime) || !in.Varint(mode) || mode > 07777 || !GetContent(in, s) || !in.done()) {
    return DataLossError("malformed file state in metadata");
  }
  s.ctime_ns = static_cast<int64_t>(ctime);
  s.mode = static_cast<uint32_t>(mode);
  return s;
}

std::string EncodePlacement(const ItemId& parent, std::string_view name) {
  std::string out(16, '\0');
  parent.ToBytes(reinterpret_cast<uint8_t*>(out.data()));
  out += name;
  return out;
}

Status DecodePlacement(std::string_view data, ItemId& parent, std::string& name) {
  if (data.size() < 17) return DataLossError("malformed placement");
  parent = ItemId(Id128::FromBytes(reinterpret_cast<const uint8_t*>(data.data())));
  name = std::string(data.substr(16));
  if (!ValidName(name)) return InvalidArgumentError("refusing unsafe file name");
  return Status::Ok();
}

bool ValidName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.size() <= 255 &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::string ConflictName(std::string_view name, uint64_t millis, std::string_view replica) {
  size_t dot = name.rfind('.');
  if (dot == 0 || dot == std::string_view::npos) dot = name.size();
  std::string_view stem = name.substr(0, dot);
  std::string_view ext = name.substr(dot);
  time_t seconds = static_cast<time_t>(millis / 1000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::string out(stem);
  out += ".conflict-";
  out += stamp;
  out += '-';
  out += replica;
  out += ext;
  if (out.size() > 255) out = out.substr(out.size() - 255);  // keep the suffix and extension
  return out;
}

ItemId PathDerivedId(const ItemId& parent, std::string_view name, uint32_t depth) {
  std::string key = EncodePlacement(parent, name);
  Sha256 h = HashBytes(key.data(), key.size());
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) hi = hi << 8 | h[i];
  for (int i = 8; i < 16; ++i) lo = lo << 8 | h[i];
  uint64_t prefix = std::min<uint32_t>(depth, 0xFFFF);
  hi = (prefix << 48) | (hi & 0x0000FFFFFFFFFFFFull);
  return ItemId(hi, lo);
}

}  // namespace meshsync::files
