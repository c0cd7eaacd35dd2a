// Records: items whose change units are named fields (a row's columns, a
// contact's properties, a feed item's elements). Every record provider
// encodes a field the same way, so any record store syncs with any other:
//
//   unit  ChangeUnitIdFromName(name)
//   data  name, a NUL byte, then the value
//
// The name travels with the value, so a replica can store a field it has
// never seen. Names hold no NUL byte; values are any bytes.
#ifndef MESHSYNC_RECORD_H_
#define MESHSYNC_RECORD_H_

#include <map>
#include <string>
#include <string_view>

#include "meshsync/ids.h"
#include "meshsync/status.h"

namespace meshsync {

std::string EncodeField(std::string_view name, std::string_view value);
// kInvalidArgument when `data` holds no NUL byte or the name is empty.
Status DecodeField(std::string_view data, std::string& name, std::string& value);

// A 64-bit FNV-1a hash, for providers' change detection (not for security).
uint64_t FieldHash(std::string_view bytes);

// A record provider's change-detection state: the hash of each field's
// encoded data, by unit. Encoded as sorted (unit, hash) pairs, 12 bytes each;
// decoding ignores a trailing partial pair.
using FieldHashes = std::map<ChangeUnitId, uint64_t>;
std::string EncodeFieldHashes(const FieldHashes& hashes);
FieldHashes DecodeFieldHashes(std::string_view state);

}  // namespace meshsync

#endif  // MESHSYNC_RECORD_H_
