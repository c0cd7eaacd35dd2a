// FeedSync 1.0 (formerly Simple Sharing Extensions) for Atom 1.0 and RSS 2.0:
// the document model, reading and writing both bindings, and the spec's
// algorithms: create, update, delete (§3.1, §3.2), merge (§3.3, with the
// subsumption and winner-picking rules) and conflict resolution (§3.4).
//
// A Feed keeps everything it does not interpret: the feed's own elements,
// and every element and attribute of an item other than sx:sync, in an
// xml::Element, so a round trip loses nothing (whitespace between elements
// is re-indented, see xml.h).
//
// Where the spec is ambiguous or wrong (the errata), the choice made here is
// stated next to the function and in docs/feedsync.md.
//
// Plain values; thread-compatible.
#ifndef MESHSYNC_PROVIDERS_FEED_FEEDSYNC_H_
#define MESHSYNC_PROVIDERS_FEED_FEEDSYNC_H_

#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "feed/xml.h"
#include "meshsync/status.h"

namespace meshsync::feedsync {

inline constexpr std::string_view kNamespace = "http://feedsync.org/2007/feedsync";
inline constexpr std::string_view kAtomNamespace = "http://www.w3.org/2005/Atom";

// An RFC 3339 date-time, normalised to UTC.
struct Timestamp {
  int64_t seconds = 0;  // since 1970-01-01T00:00:00Z
  uint32_t nanos = 0;

  auto operator<=>(const Timestamp&) const = default;

  // Parses RFC 3339 ("2005-05-21T11:43:33Z", fractions and offsets too);
  // anything else is kInvalidArgument.
  static Result<Timestamp> Parse(std::string_view text);
  // Whole seconds in UTC with a 'Z' (FeedSync 1.0.1); a fraction only when
  // the value has one.
  std::string ToString() const;
};

struct History {
  uint32_t sequence = 0;
  std::optional<Timestamp> when;
  std::optional<std::string> by;
  std::vector<xml::Attribute> extra;  // foreign attributes, kept
};

struct Item;

struct Sync {
  std::string id;
  uint32_t updates = 0;
  bool deleted = false;
  bool noconflicts = false;
  std::vector<History> history;  // most recent (topmost) first; never empty once valid
  std::vector<Item> conflicts;
  std::vector<xml::Attribute> extra;  // foreign attributes, kept

  const History& topmost() const { return history.front(); }
};

// One synchronized item: its element (atom:entry or RSS item) without the
// sx:sync child, and the parsed sx:sync.
struct Item {
  xml::Element element;
  Sync sync;
};

struct Related {
  std::string link;
  std::string type;  // "complete" or "aggregated"
  std::optional<std::string> title;
};

struct Sharing {
  std::optional<std::string> since;  // opaque strings, as the spec says
  std::optional<std::string> until;
  std::optional<Timestamp> expires;
  std::vector<Related> related;
};

enum class Format { kAtom, kRss };

struct Feed {
  Format format = Format::kAtom;
  // The document without sx:sharing and the synchronized items. Entries
  // without sx:sync stay here, untouched.
  xml::Element document;
  std::optional<Sharing> sharing;
  std::vector<Item> items;
  // Where sx:sharing and the items go among the container's children (the
  // atom:feed, or the RSS channel).
  size_t sharing_position = 0;
  size_t items_position = 0;

  // An empty feed with a title.
  static Feed New(Format format, std::string_view title);
  // The item with sx:sync id `id`, or null. Linear; see FeedIndex.
  const Item* Find(std::string_view id) const;
  Item* Find(std::string_view id);
  // The element that holds the items: atom:feed, or the RSS channel.
  xml::Element& Container();
  const xml::Element& Container() const;
};

struct ReadOptions {
  xml::Limits xml;
  uint64_t max_items = 10'000'000;
  // Keep each item's content (all but its sx:sync) as the source bytes
  // (xml::Source) rather than as nodes: for a reader that passes items
  // through without looking inside them, such as a merge of two files.
  // Item::element then has its name, attributes and source only; call
  // xml::ExpandSource to look inside.
  bool keep_item_source = false;
};

// Parses a feed. Refuses, with a message naming the item: a document that
// is not Atom or RSS 2.0; an sx:sync without sx:history, without `id`, or
// with a bad number, boolean or date; two items with one id.
Result<Feed> ParseFeed(std::string_view document, const ReadOptions& options = {});
Result<Feed> ReadFeedFile(const std::string& path, const ReadOptions& options = {});
// Reads the files at `paths` concurrently, one thread each (a merge reads
// two feeds); the results are in the order of `paths`.
std::vector<Result<Feed>> ReadFeedFiles(std::span<const std::string> paths,
                                        const ReadOptions& options = {});
std::string WriteFeed(const Feed& feed);
// Writes `feed` to `path` atomically: a temporary file next to it, flushed,
// then renamed over `path`. On failure `path` is untouched.
Status WriteFeedFile(const Feed& feed, const std::string& path);

// The item's element with its sx:sync, as it appears in a feed.
xml::Element ItemElement(const Item& item, Format format);
// Parses one atom:entry or RSS item that has an sx:sync.
Result<Item> ParseItem(const xml::Element& element);

// ---- Algorithms (§3) ----

// Whether `id` may be an sx:sync id: non-empty, at most 1024 bytes, no
// whitespace or control characters. Reading is more lenient (E14).
bool IsValidId(std::string_view id);

// §3.1: makes `item` a new synchronized item with `id`, created by `by` at
// `when`. `by` must be non-empty (we always write both `when` and `by`).
Status Create(Item& item, std::string id, std::string_view by, Timestamp when,
              bool noconflicts = false);

// §3.2: records an update by `by` at `when` (the caller has already changed
// the element). updates + 1; a new topmost history whose sequence is also
// above every sequence `by` already has in the item and its conflicts (the
// Microsoft sample's step 3.2.2.a.i); and (3.2.4, our reading) conflicts
// that the updated item now subsumes are removed.
Status Update(Item& item, std::string_view by, Timestamp when);

// §3.2 with deleted="true": the item stays as a tombstone.
Status Delete(Item& item, std::string_view by, Timestamp when);

// Footnotes 1 and 2: whether history `x` is subsumed by history `y`.
bool Subsumes(const History& y, const History& x);
// Whether item `x` is subsumed by item `y`: x's topmost history is
// subsumed by one of y's.
bool Subsumes(const Item& y, const Item& x);
// Footnote 3: whether candidate `x` wins over the current winner `w`.
bool Wins(const Item& x, const Item& w);

// §3.3 for one id: merges `incoming` into `local`, returning the merged
// item. `changed` (when not null) is set when the result differs from
// `local`.
Item MergeItem(Item local, Item incoming, bool* changed = nullptr);

struct MergeStats {
  uint64_t added = 0;      // items new to the local feed
  uint64_t updated = 0;    // items whose merge result differs from the local one
  uint64_t unchanged = 0;  // items the incoming feed had nothing new for
  uint64_t conflicts = 0;  // merged items that now carry sx:conflicts
};

// Merges every item of `incoming` into `local` (§3.3): new items are added
// at the end, in incoming order; items missing from `incoming` are left
// alone, so a partial feed never deletes anything. The local feed's own
// elements and sx:sharing are kept; the incoming ones are not republished.
Result<MergeStats> Merge(Feed& local, Feed incoming);

// §3.4: resolves the conflicts of `item` as `by` at `when`. `keep` chooses
// the content that wins: nullopt keeps the current one, k takes that of
// conflicts[k] (its element and deleted flag). Then an update by `by`; then
// every history of every conflict that the item does not subsume is added
// after the new topmost history, in order (E2: the conflict's histories,
// "Hc"; E3: a subsumed history is skipped, the rest still added; E4: in
// order; E5: update first, as Microsoft's sample does); then sx:conflicts
// is removed.
Status Resolve(Item& item, std::string_view by, Timestamp when, std::optional<size_t> keep);

}  // namespace meshsync::feedsync

#endif  // MESHSYNC_PROVIDERS_FEED_FEEDSYNC_H_
