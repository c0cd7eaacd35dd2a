// Decodes arbitrary bytes as stored item metadata, conflict records and key
// maps, as a corrupt or hostile metadata file would present them. Must never
// crash; what decodes must re-encode identically.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "src/store/item_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  meshsync::ItemMetadata item;
  if (meshsync::store::DecodeItemVersions(bytes, item).ok()) {
    meshsync::ItemMetadata again;
    if (!meshsync::store::DecodeItemVersions(meshsync::store::EncodeItemVersions(item), again)
             .ok() ||
        !(again == item)) {
      std::abort();
    }
  }
  meshsync::ConflictRecord conflict;
  if (meshsync::store::DecodeConflict(bytes, conflict).ok()) {
    meshsync::ConflictRecord again;
    if (!meshsync::store::DecodeConflict(meshsync::store::EncodeConflict(conflict), again).ok()) {
      std::abort();
    }
  }
  auto keys = meshsync::store::DecodeKeyMap(bytes);
  if (keys.ok() && meshsync::store::EncodeKeyMap(*keys) != bytes) std::abort();
  return 0;
}
