// Little helpers to write and read the compact binary encodings meshsync
// stores and sends: LEB128 varints and fixed 16-byte ids. The Reader never
// reads past its input: every getter reports failure instead.
#ifndef MESHSYNC_SRC_UTIL_CODING_H_
#define MESHSYNC_SRC_UTIL_CODING_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "meshsync/ids.h"

namespace meshsync::coding {

inline void PutVarint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

inline void PutId(std::string& out, const Id128& id) {
  uint8_t bytes[16];
  id.ToBytes(bytes);
  out.append(reinterpret_cast<const char*>(bytes), sizeof bytes);
}

inline void PutBytes(std::string& out, std::string_view bytes) {
  PutVarint(out, bytes.size());
  out.append(bytes);
}

class Reader {
 public:
  explicit Reader(std::string_view input) : input_(input) {}

  // Fails on truncation and on encodings longer than 10 bytes or overflowing
  // 64 bits, and on non-minimal encodings (so every value has one encoding).
  bool GetVarint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (input_.empty()) return false;
      auto byte = static_cast<uint8_t>(input_.front());
      input_.remove_prefix(1);
      if (shift == 63 && byte > 1) return false;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return byte != 0 || shift == 0;
    }
    return false;
  }

  bool GetId(Id128& id) {
    if (input_.size() < 16) return false;
    id = Id128::FromBytes(reinterpret_cast<const uint8_t*>(input_.data()));
    input_.remove_prefix(16);
    return true;
  }

  bool GetBytes(std::string_view& bytes) {
    uint64_t size;
    if (!GetVarint(size) || size > input_.size()) return false;
    bytes = input_.substr(0, size);
    input_.remove_prefix(size);
    return true;
  }

  bool GetByte(uint8_t& byte) {
    if (input_.empty()) return false;
    byte = static_cast<uint8_t>(input_.front());
    input_.remove_prefix(1);
    return true;
  }

  size_t remaining() const { return input_.size(); }
  bool done() const { return input_.empty(); }

 private:
  std::string_view input_;
};

}  // namespace meshsync::coding

#endif  // MESHSYNC_SRC_UTIL_CODING_H_
