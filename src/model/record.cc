#include "meshsync/record.h"

#include <algorithm>

namespace meshsync {

std::string EncodeField(std::string_view name, std::string_view value) {
  std::string out;
  out.reserve(name.size() + 1 + value.size());
  out.append(name);
  out.push_back('\0');
  out.append(value);
  return out;
}

Status DecodeField(std::string_view data, std::string_view& name, std::string_view& value) {
  size_t nul = data.find('\0');
  if (nul == std::string_view::npos || nul == 0) {
    return InvalidArgumentError("record field has no name");
  }
  name = data.substr(0, nul);
  value = data.substr(nul + 1);
  return Status::Ok();
}

Status DecodeField(std::string_view data, std::string& name, std::string& value) {
  std::string_view name_view, value_view;
  MESHSYNC_RETURN_IF_ERROR(DecodeField(data, name_view, value_view));
  name = name_view;
  value = value_view;
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

uint64_t FieldHashOf(std::string_view name, std::string_view value) {
  uint64_t hash = 14695981039346656037ull;
  auto add = [&hash](std::string_view bytes) {
    for (char c : bytes) {
      hash ^= static_cast<uint8_t>(c);
      hash *= 1099511628211ull;
    }
  };
  add(name);
  add(std::string_view("\0", 1));
  add(value);
  return hash;
}

std::string EncodeFieldHashes(const FieldHashes& hashes) {
  std::string out;
  out.reserve(hashes.size() * 12);
  for (const auto& [unit, hash] : hashes) {
    for (int byte = 0; byte < 4; ++byte) out.push_back(static_cast<char>(unit >> (8 * byte)));
    for (int byte = 0; byte < 8; ++byte) out.push_back(static_cast<char>(hash >> (8 * byte)));
  }
  return out;
}

std::vector<ChangeUnitId> ChangedUnits(const FieldHashes& before, const FieldHashes& now) {
  std::vector<ChangeUnitId> changed;
  changed.reserve(std::max(before.size(), now.size()));
  auto b = before.begin(), n = now.begin();
  while (b != before.end() || n != now.end()) {
    if (n == now.end() || (b != before.end() && b->first < n->first)) {
      changed.push_back((b++)->first);  // removed
    } else if (b == before.end() || n->first < b->first) {
      changed.push_back((n++)->first);  // added
    } else {
      if (b->second != n->second) changed.push_back(n->first);
      ++b;
      ++n;
    }
  }
  return changed;
}

FieldHashes DecodeFieldHashes(std::string_view state) {
  FieldHashes hashes;
  hashes.reserve(state.size() / 12);
  for (size_t pos = 0; pos + 12 <= state.size(); pos += 12) {
    uint32_t unit = 0;
    uint64_t hash = 0;
    for (size_t byte = 4; byte-- > 0;) unit = (unit << 8) | static_cast<uint8_t>(state[pos + byte]);
    for (size_t byte = 8; byte-- > 0;) {
      hash = (hash << 8) | static_cast<uint8_t>(state[pos + 4 + byte]);
    }
    hashes[unit] = hash;
  }
  return hashes;
}

}  // namespace meshsync
