// RowCache: the rows a scan read, kept for the session that follows, so that
// sending a row does not read it from the database again.
//
// A scan of 100,000 rows keeps 100,000 entries. Kept as a hash map of
// strings, each entry cost a node, a key, a state and one allocation per
// value, and freeing them took 100 ms when the provider closed. Here an
// entry is one record in a block of memory (key, state and values, each
// length-prefixed) and the index is an open-addressing table of pointers
// into the blocks: a few allocations per megabyte, and a few frees.
//
// Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_SQL_ROW_CACHE_H_
#define MESHSYNC_PROVIDERS_SQL_ROW_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace meshsync::sql {

class RowCache {
 public:
  // Keeps at most about `max_bytes` (records and index); Put refuses more.
  explicit RowCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Keeps the `values` of the row at `key`, which hash to the provider
  // state `state`, in place of what was kept for `key`. False, keeping
  // nothing new, once the cache is full.
  bool Put(std::string_view key, std::string_view state, std::span<const std::string> values);
  // The values kept for `key`, if they were kept with `state`: views of the
  // cache's copies, valid until Clear (Put and Erase move no record).
  bool Get(std::string_view key, std::string_view state,
           std::vector<std::string_view>& values) const;
  void Erase(std::string_view key);
  void Clear();

  size_t size() const { return live_; }
  size_t bytes() const { return block_bytes_ + slots_.size() * sizeof(Slot); }

 private:
  static constexpr size_t kBlockBytes = size_t{1} << 20;

  // The index of `key`'s slot or, if it has none, of the slot where it
  // would go (empty or erased).
  size_t Find(std::string_view key, uint64_t hash) const;
  void Grow();
  char* Allocate(size_t size);

  size_t max_bytes_;
  std::vector<std::unique_ptr<char[]>> blocks_;
  size_t block_bytes_ = 0;  // allocated, in all blocks
  char* next_ = nullptr;    // free space in the last block
  size_t left_ = 0;
  // Open addressing, linear probing; a null record is empty, erased() an
  // erased entry. The table's size is a power of two, at most half full
  // (counting erased entries). Each slot keeps its key's hash, so that a
  // probe reads a record only when the hashes match.
  struct Slot {
    uint64_t hash = 0;
    const char* record = nullptr;
  };
  std::vector<Slot> slots_;
  size_t used_ = 0;  // slots not empty
  size_t live_ = 0;  // slots holding an entry
};

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_ROW_CACHE_H_
