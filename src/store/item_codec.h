// Compact encodings of ItemMetadata (minus id and key), conflict records and
// key maps, for stores that keep them as blobs. Ticks are written as deltas
// from the item's update tick, so a typical item costs about 20 bytes.
#ifndef MESHSYNC_SRC_STORE_ITEM_CODEC_H_
#define MESHSYNC_SRC_STORE_ITEM_CODEC_H_

#include <string>
#include <string_view>

#include "meshsync/metadata_store.h"

namespace meshsync::store {

// Everything but the id and the key, which stores keep in columns of their own.
std::string EncodeItemVersions(const ItemMetadata& item);
// Fills everything but id and key. kDataLoss on malformed bytes.
Status DecodeItemVersions(std::string_view bytes, ItemMetadata& item);

std::string EncodeConflict(const ConflictRecord& conflict);
Status DecodeConflict(std::string_view bytes, ConflictRecord& conflict);

std::string EncodeKeyMap(const ReplicaKeyMap& keys);
Result<ReplicaKeyMap> DecodeKeyMap(std::string_view bytes);

}  // namespace meshsync::store

#endif  // MESHSYNC_SRC_STORE_ITEM_CODEC_H_
