#include "meshsync/record.h"

namespace meshsync {

std::string EncodeField(std::string_view name, std::string_view value) {
  std::string out;
  out.reserve(name.size() + 1 + value.size());
  out.append(name);
  out.push_back('\0');
  out.append(value);
  return out;
}

Status DecodeField(std::string_view data, std::string& name, std::string& value) {
  size_t nul = data.find('\0');
  if (nul == std::string_view::npos || nul == 0) {
    return InvalidArgumentError("record field has no name");
  }
  name = std::string(data.substr(0, nul));
  value = std::string(data.substr(nul + 1));
  return Status::Ok();
}

uint64_t FieldHash(std::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

}  // namespace meshsync
