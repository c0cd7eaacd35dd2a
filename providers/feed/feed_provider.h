// FeedProvider: a FeedSync feed file (Atom or RSS) as a replica, so a feed
// syncs with another feed or with any record store (include/meshsync/record.h).
//
// Items are the feed's synchronized items; the key is the sx:sync id. Each
// child element of an item is a field, so concurrent edits of different
// elements merge and edits of one element conflict:
//   name   the element's local name when it is in the feed's own namespace
//          (Atom's, or none for RSS), else "{uri}local"; "#xml" is added
//          when the value is XML rather than text
//   value  the text, for one element holding only text; else every element
//          of that name, written as XML fragments one after the other
// Two fields carry FeedSync's own data: "{http://feedsync.org/2007/feedsync}id"
// the sx:sync id, so an item keeps its id through any other store into
// another feed; and "{http://feedsync.org/2007/feedsync}sync" the item's
// version (updates, deleted, history; not its conflicts).
//
// Applying a change: when it carries the sync field (it comes from a feed),
// the item takes that version, so two feeds synced by meshsync hold the same
// FeedSync histories and a later FeedSync merge of them finds no conflict.
// Otherwise (a record store, or only some fields) it is a FeedSync update
// by the provider's endpoint (its `by`), and the new version is reported
// back as a rewritten unit so that it spreads too. Deletes leave tombstones. An item removed from
// the file by hand is a deletion. FeedSync conflicts already in the file are kept as they are; the
// item's winning content is what syncs.
//
// The file is read by DetectChanges and written once per batch by
// CommitChanges (atomically, see WriteFeedFile). If it changed on disk in
// between, the commit fails and nothing is overwritten; the next session
// picks the change up.
//
// Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_FEED_FEED_PROVIDER_H_
#define MESHSYNC_PROVIDERS_FEED_FEED_PROVIDER_H_

#include <map>
#include <string>
#include <unordered_map>

#include "feed/feedsync.h"
#include "meshsync/env.h"
#include "meshsync/provider.h"

namespace meshsync::feedsync {

// The field that carries an item's sx:sync id.
inline constexpr std::string_view kIdField = "{http://feedsync.org/2007/feedsync}id";
// The field that carries an item's FeedSync version.
inline constexpr std::string_view kSyncField = "{http://feedsync.org/2007/feedsync}sync";

// An item's fields (see the header comment), without kIdField and kSyncField.
std::map<std::string, std::string> ItemFields(const Item& item, Format format);
// Sets field `name` of `item` (replacing the elements it names), or removes
// it when `value` is null. kInvalidArgument for a name or value that cannot
// be an element.
Status SetItemField(Item& item, Format format, const std::string& name, const std::string* value);

class FeedProvider final : public Provider {
 public:
  static constexpr std::string_view kName = "feedsync";

  // `endpoint` is the FeedSync `by` of changes written to the feed. A
  // missing file is an empty feed of `format_for_new`, created on first write.
  FeedProvider(std::string path, std::string endpoint, Format format_for_new,
               Clock& clock = SystemClock());

  const Feed& feed() const { return feed_; }

  std::string_view Name() const override { return kName; }
  Status DetectChanges(ChangeRecorder& recorder) override;
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override;
  Result<SaveResult> SaveChange(const SaveRequest& request) override;
  Status CommitChanges() override;

 private:
  Status Load();
  Timestamp Now();
  Item* FindItem(std::string_view id);

  const std::string path_;
  const std::string endpoint_;
  const Format format_for_new_;
  Clock& clock_;
  bool loaded_ = false;
  bool dirty_ = false;
  Feed feed_;
  std::unordered_map<std::string, size_t> index_;  // sx:sync id -> items index
  // What the file was when read: (exists, size, mtime ns, inode).
  struct FileIdentity {
    bool exists = false;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t inode = 0;
    friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
  };
  static FileIdentity Identify(const std::string& path);
  FileIdentity identity_;
};

}  // namespace meshsync::feedsync

#endif  // MESHSYNC_PROVIDERS_FEED_FEED_PROVIDER_H_
