// Decodes arbitrary bytes as knowledge. Must never crash, leak or read out of
// bounds; what decodes must re-encode to exactly the same bytes (the
// encoding is canonical), and a failed decode must not touch the key map.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "meshsync/knowledge.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  meshsync::ReplicaKeyMap keys(meshsync::ReplicaId(meshsync::Id128{7, 7}));
  auto decoded = meshsync::Knowledge::Decode(bytes, keys);
  if (!decoded.ok()) {
    if (keys.size() != 1) std::abort();
    return 0;
  }
  if (decoded->Encode(keys) != bytes) std::abort();
  // Exercise the operations on whatever decoded.
  meshsync::Knowledge doubled = meshsync::Knowledge::Union(*decoded, *decoded);
  if (!(doubled == *decoded) || !decoded->Contains(*decoded)) std::abort();
  return 0;
}
