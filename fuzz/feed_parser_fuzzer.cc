// Fuzzes the FeedSync reader with arbitrary bytes. What it accepts must
// write out and parse back to the same feed (the writer's output is a fixed
// point), and merging it with itself settles after one merge. Reading with
// items kept as source accepts the same documents, and writes the same feed
// (byte for byte, for a feed in the writer's form).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "feed/feedsync.h"

using namespace meshsync;
using namespace meshsync::feedsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  ReadOptions as_nodes;
  as_nodes.xml.max_bytes = 1 << 20;
  ReadOptions as_source = as_nodes;
  as_source.keep_item_source = true;
  auto feed = ParseFeed(input, as_nodes);
  auto kept = ParseFeed(input, as_source);
  if (feed.ok() != kept.ok()) std::abort();
  if (!feed.ok()) return 0;
  std::string written = WriteFeed(*feed);
  auto again = ParseFeed(written, as_nodes);
  if (!again.ok()) std::abort();
  if (WriteFeed(*again) != written) std::abort();
  auto kept_again = ParseFeed(WriteFeed(*kept), as_nodes);
  if (!kept_again.ok() || WriteFeed(*kept_again) != written) std::abort();
  auto canonical = ParseFeed(written, as_source);
  if (!canonical.ok() || WriteFeed(*canonical) != written) std::abort();
  // A hand-made feed may name a winner the rules would not pick, so one
  // merge with itself may change it; after that, merging is a fixed point.
  if (!Merge(*again, std::move(*feed)).ok()) std::abort();
  auto copy = ParseFeed(WriteFeed(*again), as_nodes);
  if (!copy.ok()) std::abort();
  auto stats = Merge(*again, std::move(*copy));
  if (!stats.ok() || stats->added != 0 || stats->updated != 0) std::abort();
  return 0;
}
