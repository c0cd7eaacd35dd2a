#include "feed/feedsync.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "meshsync/atomic_file.h"

namespace meshsync::feedsync {
namespace {

const xml::Name kSyncName{std::string(kNamespace), "sync", "sx"};
const xml::Name kHistoryName{std::string(kNamespace), "history", "sx"};
const xml::Name kConflictsName{std::string(kNamespace), "conflicts", "sx"};
const xml::Name kSharingName{std::string(kNamespace), "sharing", "sx"};
const xml::Name kRelatedName{std::string(kNamespace), "related", "sx"};

// ---- Dates (RFC 3339 section 5.6) ----

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {  // H. Hinnant's algorithm
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

bool Digits(std::string_view text, size_t pos, size_t count, unsigned& value) {
  if (pos + count > text.size()) return false;
  value = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    value = value * 10 + static_cast<unsigned>(text[i] - '0');
  }
  return true;
}

// ---- Attributes ----

Result<uint32_t> ParseCount(std::string_view text, std::string_view what) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value == 0) {
    return InvalidArgumentError(std::string(what) + " must be a whole number from 1 to " +
                                std::to_string(std::numeric_limits<uint32_t>::max()) + ", not \"" +
                                std::string(text.substr(0, 40)) + "\"");
  }
  return value;
}

Result<bool> ParseBool(std::string_view text, std::string_view what) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  return InvalidArgumentError(std::string(what) + " must be \"true\" or \"false\", not \"" +
                              std::string(text.substr(0, 40)) + "\"");
}

bool IsReadableId(std::string_view id) {
  if (id.empty() || id.size() > 4096 || !xml::IsValidText(id)) return false;
  return std::none_of(id.begin(), id.end(),
                      [](char c) { return c == '\t' || c == '\n' || c == '\r'; });
}

std::string Quoted(std::string_view id) {
  return "\"" + std::string(id.substr(0, 80)) + (id.size() > 80 ? "...\"" : "\"");
}

bool IsItemElement(const xml::Element& element, Format format) {
  return format == Format::kAtom ? element.name.Is(kAtomNamespace, "entry")
                                 : element.name.Is("", "item");
}

xml::Name ItemName(Format format) {
  return format == Format::kAtom ? xml::Name{std::string(kAtomNamespace), "entry", ""}
                                 : xml::Name{"", "item", ""};
}

// ---- Reading ----

Result<History> ParseHistory(const xml::Element& element, std::string_view id) {
  History history;
  bool has_sequence = false;
  for (const xml::Attribute& attribute : element.attributes) {
    const std::string& value = attribute.value;
    if (!attribute.name.uri.empty()) {
      history.extra.push_back(attribute);
    } else if (attribute.name.local == "sequence") {
      auto sequence = ParseCount(value, "sx:history sequence");
      if (!sequence.ok()) return sequence.status();
      history.sequence = *sequence;
      has_sequence = true;
    } else if (attribute.name.local == "when") {
      auto when = Timestamp::Parse(value);
      if (!when.ok())
        return InvalidArgumentError("sx:history when: " + std::string(when.status().message()));
      history.when = *when;
    } else if (attribute.name.local == "by") {
      history.by = value;
    } else {
      history.extra.push_back(attribute);
    }
  }
  if (!has_sequence)
    return InvalidArgumentError("sx:history of item " + Quoted(id) + " has no sequence");
  if (!history.when && !history.by) {
    return InvalidArgumentError("sx:history of item " + Quoted(id) + " has neither when nor by");
  }
  return history;
}

Result<Item> ParseItemOwned(xml::Element element, Format format);

Status ParseSync(const xml::Element& element, Sync& sync, Format format) {
  bool has_updates = false;
  for (const xml::Attribute& attribute : element.attributes) {
    const std::string& name = attribute.name.local;
    if (!attribute.name.uri.empty()) {
      sync.extra.push_back(attribute);
    } else if (name == "id") {
      sync.id = attribute.value;
    } else if (name == "updates") {
      auto updates = ParseCount(attribute.value, "sx:sync updates");
      if (!updates.ok()) return updates.status();
      sync.updates = *updates;
      has_updates = true;
    } else if (name == "deleted") {
      auto deleted = ParseBool(attribute.value, "sx:sync deleted");
      if (!deleted.ok()) return deleted.status();
      sync.deleted = *deleted;
    } else if (name == "noconflicts" || name == "noconflict") {  // the tutorial's spelling
      auto noconflicts = ParseBool(attribute.value, "sx:sync noconflicts");
      if (!noconflicts.ok()) return noconflicts.status();
      sync.noconflicts = *noconflicts;
    } else {
      sync.extra.push_back(attribute);
    }
  }
  if (sync.id.empty()) return InvalidArgumentError("an sx:sync has no id");
  if (!IsReadableId(sync.id)) {
    return InvalidArgumentError("sx:sync id " + Quoted(sync.id) + " is not a valid id");
  }
  if (!has_updates)
    return InvalidArgumentError("sx:sync of item " + Quoted(sync.id) + " has no updates");
  for (const xml::Node& child : element.children) {
    if (child.IsText()) {
      if (child.text().find_first_not_of(" \t\r\n") != std::string::npos) {
        return InvalidArgumentError("sx:sync of item " + Quoted(sync.id) + " holds text");
      }
      continue;
    }
    const xml::Element& sub = child.element();
    if (sub.name.Is(kNamespace, "history")) {
      if (!sync.conflicts.empty()) {
        return InvalidArgumentError("sx:history after sx:conflicts in item " + Quoted(sync.id));
      }
      auto history = ParseHistory(sub, sync.id);
      if (!history.ok()) return history.status();
      sync.history.push_back(std::move(*history));
    } else if (sub.name.Is(kNamespace, "conflicts")) {
      for (const xml::Node& conflict : sub.children) {
        if (conflict.IsText()) continue;
        if (!IsItemElement(conflict.element(), format)) {
          return InvalidArgumentError("sx:conflicts of item " + Quoted(sync.id) + " holds a " +
                                      conflict.element().name.Clark() + " element");
        }
        auto item = ParseItemOwned(conflict.element(), format);
        if (!item.ok()) return item.status();
        if (item->sync.id != sync.id) {
          return InvalidArgumentError("a conflict of item " + Quoted(sync.id) + " has id " +
                                      Quoted(item->sync.id));
        }
        // A conflict's own conflicts are conflicts of the item (flattened).
        std::vector<Item> nested = std::move(item->sync.conflicts);
        item->sync.conflicts.clear();
        sync.conflicts.push_back(std::move(*item));
        for (Item& n : nested) sync.conflicts.push_back(std::move(n));
      }
    } else {
      return InvalidArgumentError("unexpected " + sub.name.Clark() + " in sx:sync of item " +
                                  Quoted(sync.id));
    }
  }
  if (sync.history.empty()) {  // E17
    return InvalidArgumentError("item " + Quoted(sync.id) + " has no sx:history");
  }
  return Status::Ok();
}

Result<Item> ParseItemOwned(xml::Element element, Format format) {
  Item item;
  auto sync_at = element.children.end();
  for (auto it = element.children.begin(); it != element.children.end(); ++it) {
    if (it->IsText() || !it->element().name.Is(kNamespace, "sync")) continue;
    if (sync_at != element.children.end()) {
      return InvalidArgumentError("an item has more than one sx:sync");
    }
    sync_at = it;
  }
  if (sync_at == element.children.end()) return InvalidArgumentError("an item has no sx:sync");
  if (Status status = ParseSync(sync_at->element(), item.sync, format); !status.ok()) {
    return status;
  }
  element.children.erase(sync_at);
  item.element = std::move(element);
  return item;
}

Result<Sharing> ParseSharing(const xml::Element& element) {
  Sharing sharing;
  if (const std::string* since = element.Attr("since")) sharing.since = *since;
  if (const std::string* until = element.Attr("until")) sharing.until = *until;
  if (const std::string* expires = element.Attr("expires")) {
    auto when = Timestamp::Parse(*expires);
    if (!when.ok())
      return InvalidArgumentError("sx:sharing expires: " + std::string(when.status().message()));
    sharing.expires = *when;
  }
  for (const xml::Node& child : element.children) {
    if (child.IsText()) continue;
    const xml::Element& related = child.element();
    if (!related.name.Is(kNamespace, "related")) continue;
    const std::string* link = related.Attr("link");
    const std::string* type = related.Attr("type");
    if (link == nullptr || type == nullptr) {
      return InvalidArgumentError("sx:related needs both link and type");
    }
    if (*type != "complete" && *type != "aggregated") {
      return InvalidArgumentError("sx:related type must be \"complete\" or \"aggregated\", not " +
                                  Quoted(*type));
    }
    Related r{*link, *type, std::nullopt};
    if (const std::string* title = related.Attr("title")) r.title = *title;
    sharing.related.push_back(std::move(r));
  }
  return sharing;
}

// Reads a feed as the XML parser streams it: items and sx:sharing are taken
// out of the document as they end (ElementSink), so a large feed is never
// held twice.
class FeedReader {
 public:
  // `document_bytes`, when known, sizes the item list up front: growing it
  // moves every item parsed so far, again and again (a tenth of reading a
  // large feed). Capacity that no item fills is never touched, so an
  // estimate on the generous side costs address space, not memory.
  explicit FeedReader(const ReadOptions& options, uint64_t document_bytes = 0) : options_(options) {
    feed_.items.reserve(
        static_cast<size_t>(std::min<uint64_t>(options.max_items, document_bytes / kMinItemBytes)));
    if (options.keep_item_source) {
      policy_.keep = [this](const xml::Element& element, const xml::Element& parent,
                            const xml::Element& root) {
        auto format = ContainerFormat(parent, root);
        return format && IsItemElement(element, *format);
      };
      policy_.built_uri = kNamespace;
      policy_.built_local = "sync";
    }
  }

  xml::ElementSink Sink() {
    return [this](xml::Element& element, const xml::Element& parent,
                  const xml::Element& root) -> Result<bool> { return Take(element, parent, root); };
  }
  // Which elements keep their content as source; null for none.
  const xml::SourcePolicy* Policy() const { return policy_.keep ? &policy_ : nullptr; }

  Result<Feed> Finish(xml::Element root) {
    MESHSYNC_RETURN_IF_ERROR(CheckRoot(root));
    feed_.format = root.name.Is(kAtomNamespace, "feed") ? Format::kAtom : Format::kRss;
    feed_.document = std::move(root);
    xml::Element& container = feed_.Container();
    std::vector<xml::Node> kept;
    kept.reserve(container.children.size() - taken_.size());
    size_t next_taken = 0;
    bool items_seen = false;
    for (xml::Node& child : container.children) {
      if (child.IsText() || !child.element().name.local.empty()) {
        kept.push_back(std::move(child));
        continue;
      }
      // A place an item or sx:sharing was taken from.
      if (taken_[next_taken++] == Taken::kSharing) {
        feed_.sharing_position = kept.size();
      } else if (!items_seen) {
        feed_.items_position = kept.size();
        items_seen = true;
      }
    }
    if (!items_seen) feed_.items_position = kept.size();
    if (!feed_.sharing) feed_.sharing_position = feed_.items_position;
    container.children = std::move(kept);
    // Ids are unique.
    std::vector<std::string_view> ids;
    ids.reserve(feed_.items.size());
    for (const Item& item : feed_.items) ids.push_back(item.sync.id);
    std::sort(ids.begin(), ids.end());
    auto twice = std::adjacent_find(ids.begin(), ids.end());
    if (twice != ids.end()) {
      return InvalidArgumentError("two items have sx:sync id " + Quoted(*twice));
    }
    return std::move(feed_);
  }

 private:
  enum class Taken : uint8_t { kSharing, kItem };

  static Status CheckRoot(const xml::Element& root) {
    if (root.name.Is(kAtomNamespace, "feed")) return Status::Ok();
    if (root.name.Is("", "rss")) {
      if (root.Child("", "channel") == nullptr)
        return InvalidArgumentError("RSS feed has no channel");
      return Status::Ok();
    }
    return InvalidArgumentError("not an Atom or RSS 2.0 feed (the root element is " +
                                root.name.Clark() + ")");
  }

  // The format of a feed whose items are children of `parent`, or nothing
  // if `parent` is not the feed's container.
  std::optional<Format> ContainerFormat(const xml::Element& parent,
                                        const xml::Element& root) const {
    if (root.name.Is(kAtomNamespace, "feed") && &parent == &root) return Format::kAtom;
    if (root.name.Is("", "rss") && &parent != &root && parent.name.Is("", "channel") &&
        !channel_done_) {
      return Format::kRss;  // in the first channel, the one the feed is
    }
    return std::nullopt;
  }

  Result<bool> Take(xml::Element& element, const xml::Element& parent, const xml::Element& root) {
    const std::optional<Format> container = ContainerFormat(parent, root);
    if (!container) {
      if (root.name.Is("", "rss") && &parent == &root && element.name.Is("", "channel")) {
        channel_done_ = true;
      }
      return false;
    }
    const Format format = *container;
    if (element.name.Is(kNamespace, "sharing")) {
      if (feed_.sharing) return InvalidArgumentError("the feed has more than one sx:sharing");
      auto sharing = ParseSharing(element);
      if (!sharing.ok()) return sharing.status();
      feed_.sharing = std::move(*sharing);
      taken_.push_back(Taken::kSharing);
      return true;
    }
    if (!IsItemElement(element, format) || element.Child(kNamespace, "sync") == nullptr) {
      return false;
    }
    if (feed_.items.size() >= options_.max_items) {
      return InvalidArgumentError("the feed has more than " + std::to_string(options_.max_items) +
                                  " items");
    }
    auto item = ParseItemOwned(std::move(element), format);
    if (!item.ok()) return item.status();
    feed_.items.push_back(std::move(*item));
    taken_.push_back(Taken::kItem);
    return true;
  }

  // Fewer bytes than any real item (an entry with its sx:sync and one
  // history is about 200).
  static constexpr uint64_t kMinItemBytes = 160;

  const ReadOptions& options_;
  xml::SourcePolicy policy_;
  Feed feed_;
  std::vector<Taken> taken_;   // in document order
  bool channel_done_ = false;  // RSS: the first channel has ended
};

// ---- Writing ----

xml::Element SyncShell(const Sync& sync) {
  xml::Element element;
  element.name = kSyncName;
  element.SetAttr("id", sync.id);
  element.SetAttr("updates", std::to_string(sync.updates));
  if (sync.deleted) element.SetAttr("deleted", "true");
  if (sync.noconflicts) element.SetAttr("noconflicts", "true");
  for (const xml::Attribute& attribute : sync.extra) element.attributes.push_back(attribute);
  return element;
}

xml::Element HistoryElement(const History& history) {
  xml::Element element;
  element.name = kHistoryName;
  element.SetAttr("sequence", std::to_string(history.sequence));
  if (history.when) element.SetAttr("when", history.when->ToString());
  if (history.by) element.SetAttr("by", *history.by);
  for (const xml::Attribute& attribute : history.extra) element.attributes.push_back(attribute);
  return element;
}

bool ElementOnly(const xml::Element& element) {
  return std::none_of(element.children.begin(), element.children.end(),
                      [](const xml::Node& child) { return child.IsText(); });
}

void WriteItem(xml::Writer& writer, const Item& item) {
  writer.Open(item.element, ElementOnly(item.element));
  for (const xml::Node& child : item.element.children) {
    if (child.IsText()) {
      writer.Text(child.text());
    } else {
      writer.Append(child.element());
    }
  }
  {
    const std::string updates = std::to_string(item.sync.updates);
    xml::PlainAttribute attributes[4] = {{"id", item.sync.id}, {"updates", updates}};
    size_t count = 2;
    if (item.sync.deleted) attributes[count++] = {"deleted", "true"};
    if (item.sync.noconflicts) attributes[count++] = {"noconflicts", "true"};
    writer.Open(kSyncName, std::span(attributes, count), item.sync.extra);
  }
  for (const History& history : item.sync.history) {
    const std::string sequence = std::to_string(history.sequence);
    const std::string when = history.when ? history.when->ToString() : std::string();
    xml::PlainAttribute attributes[3] = {{"sequence", sequence}};
    size_t count = 1;
    if (history.when) attributes[count++] = {"when", when};
    if (history.by) attributes[count++] = {"by", *history.by};
    writer.Open(kHistoryName, std::span(attributes, count), history.extra);
    writer.Close();
  }
  if (!item.sync.conflicts.empty()) {
    xml::Element conflicts;
    conflicts.name = kConflictsName;
    writer.Open(conflicts);
    for (const Item& conflict : item.sync.conflicts) WriteItem(writer, conflict);
    writer.Close();
  }
  writer.Close();
  writer.Close();
}

xml::Element SharingElement(const Sharing& sharing) {
  xml::Element element;
  element.name = kSharingName;
  if (sharing.since) element.SetAttr("since", *sharing.since);
  if (sharing.until) element.SetAttr("until", *sharing.until);
  if (sharing.expires) element.SetAttr("expires", sharing.expires->ToString());
  for (const Related& related : sharing.related) {
    xml::Element r;
    r.name = kRelatedName;
    r.SetAttr("link", related.link);
    r.SetAttr("type", related.type);
    if (related.title) r.SetAttr("title", *related.title);
    element.children.push_back(xml::Node{std::move(r)});
  }
  return element;
}

void WriteContainer(xml::Writer& writer, const Feed& feed) {
  const xml::Element& container = feed.Container();
  writer.Open(container, ElementOnly(container));
  auto insert_at = [&](size_t position) {
    if (feed.sharing && position == feed.sharing_position) {
      writer.Append(SharingElement(*feed.sharing));
    }
    if (position == feed.items_position) {
      for (const Item& item : feed.items) WriteItem(writer, item);
    }
  };
  size_t position = 0;
  for (const xml::Node& child : container.children) {
    insert_at(position++);
    if (child.IsText()) {
      writer.Text(child.text());
    } else {
      writer.Append(child.element());
    }
  }
  insert_at(position);
  writer.Close();
}

// The histories of `item` and of its conflicts.
template <typename Fn>
void ForEachHistory(const Item& item, Fn&& fn) {
  for (const History& history : item.sync.history) fn(history);
  for (const Item& conflict : item.sync.conflicts) ForEachHistory(conflict, fn);
}

// §3.2.1-3.2.3 with the per-`by` sequence rule (E6), over the histories of
// `item` and of `also` (conflicts the caller has set aside).
Status RecordUpdate(Item& item, std::span<const Item> also, std::string_view by, Timestamp when) {
  if (by.empty() || !xml::IsValidText(by)) {
    return InvalidArgumentError("an endpoint (by) must be non-empty text");
  }
  if (item.sync.updates == std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError("item " + Quoted(item.sync.id) + " cannot be updated again");
  }
  uint32_t sequence = item.sync.updates + 1;
  bool overflow = false;
  auto raise = [&](const History& history) {
    if (history.by && *history.by == by && history.sequence >= sequence) {
      if (history.sequence == std::numeric_limits<uint32_t>::max())
        overflow = true;
      else
        sequence = history.sequence + 1;
    }
  };
  ForEachHistory(item, raise);
  for (const Item& other : also) ForEachHistory(other, raise);
  if (overflow)
    return InvalidArgumentError("item " + Quoted(item.sync.id) + " cannot be updated again");
  item.sync.updates += 1;
  item.sync.history.insert(item.sync.history.begin(), History{sequence, when, std::string(by), {}});
  return Status::Ok();
}

// What names one version of an item: its update count, deleted flag and
// topmost history. Two copies of one version hold the same content.
using VersionKey =
    std::tuple<uint32_t, bool, uint32_t, std::optional<Timestamp>, std::optional<std::string>>;

VersionKey KeyOf(const Item& item) {
  const History& top = item.sync.topmost();
  return {item.sync.updates, item.sync.deleted, top.sequence, top.when, top.by};
}

// The versions an item holds: its own, then its conflicts' in order.
std::pair<VersionKey, std::vector<VersionKey>> VersionsOf(const Item& item) {
  std::vector<VersionKey> conflicts;
  for (const Item& conflict : item.sync.conflicts) conflicts.push_back(KeyOf(conflict));
  std::sort(conflicts.begin(), conflicts.end());
  return {KeyOf(item), std::move(conflicts)};
}

}  // namespace

// ---- Timestamp ----

Result<Timestamp> Timestamp::Parse(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("\"" + std::string(text.substr(0, 40)) +
                                "\" is not an RFC 3339 date-time (like 2005-05-21T11:43:33Z)");
  };
  unsigned year, month, day, hour, minute, second;
  if (!Digits(text, 0, 4, year) || text.size() < 20 || text[4] != '-' ||
      !Digits(text, 5, 2, month) || text[7] != '-' || !Digits(text, 8, 2, day) ||
      (text[10] != 'T' && text[10] != 't') || !Digits(text, 11, 2, hour) || text[13] != ':' ||
      !Digits(text, 14, 2, minute) || text[16] != ':' || !Digits(text, 17, 2, second)) {
    return bad();
  }
  static constexpr unsigned kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month < 1 || month > 12 || day < 1 || day > kDays[month - 1] ||
      (month == 2 && day == 29 && !leap) || hour > 23 || minute > 59 || second > 60) {
    return bad();
  }
  size_t pos = 19;
  uint32_t nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    size_t digits = 0;
    for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos, ++digits) {
      if (digits < 9) nanos = nanos * 10 + static_cast<uint32_t>(text[pos] - '0');
    }
    if (digits == 0) return bad();
    for (size_t k = digits; k < 9; ++k) nanos *= 10;
  }
  int64_t offset = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    unsigned off_hour, off_minute;
    if (!Digits(text, pos + 1, 2, off_hour) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !Digits(text, pos + 4, 2, off_minute) || off_hour > 23 || off_minute > 59) {
      return bad();
    }
    offset = (text[pos] == '+' ? 1 : -1) * static_cast<int64_t>(off_hour * 3600 + off_minute * 60);
    pos += 6;
  } else {
    return bad();
  }
  if (pos != text.size()) return bad();
  if (second == 60) second = 59;  // a leap second: the last second of its minute
  int64_t seconds = DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
  seconds -= offset;
  // An offset can carry the instant out of the four-digit years that UTC can
  // be written in (0000-01-01T00:30:00+01:00); such a date could not be
  // written back, so it is refused here rather than mangled later.
  static const int64_t kFirst = DaysFromCivil(0, 1, 1) * 86400;
  static const int64_t kLast = DaysFromCivil(10000, 1, 1) * 86400 - 1;
  if (seconds < kFirst || seconds > kLast) {
    return InvalidArgumentError("\"" + std::string(text.substr(0, 40)) +
                                "\" falls outside the years 0000 to 9999 in UTC");
  }
  return Timestamp{seconds, nanos};
}

std::string Timestamp::ToString() const {
  int64_t days = seconds / 86400;
  int64_t rest = seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    --days;
  }
  int64_t year;
  unsigned month, day;
  CivilFromDays(days, year, month, day);
  // By hand rather than with snprintf: a feed writes one per history.
  std::string out;
  out.reserve(31);
  auto digits = [&out](uint64_t value, int width) {
    char buffer[20];
    int n = 0;
    do {
      buffer[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    for (int pad = n; pad < width; ++pad) out.push_back('0');
    while (n > 0) out.push_back(buffer[--n]);
  };
  if (year < 0) out.push_back('-');  // never, once parsed; kept total all the same
  digits(static_cast<uint64_t>(year < 0 ? -year : year), 4);
  out.push_back('-');
  digits(month, 2);
  out.push_back('-');
  digits(day, 2);
  out.push_back('T');
  digits(static_cast<uint64_t>(rest / 3600), 2);
  out.push_back(':');
  digits(static_cast<uint64_t>(rest / 60 % 60), 2);
  out.push_back(':');
  digits(static_cast<uint64_t>(rest % 60), 2);
  if (nanos != 0) {
    out.push_back('.');
    uint32_t fraction = nanos;
    int width = 9;
    while (fraction % 10 == 0) {
      fraction /= 10;
      --width;
    }
    digits(fraction, width);
  }
  out.push_back('Z');
  return out;
}

// ---- Feed ----

Feed Feed::New(Format format, std::string_view title) {
  Feed feed;
  feed.format = format;
  auto text_element = [](xml::Name name, std::string_view text) {
    xml::Element element;
    element.name = std::move(name);
    element.children.push_back(xml::Node{std::string(text)});
    return xml::Node{std::move(element)};
  };
  if (format == Format::kAtom) {
    feed.document.name = xml::Name{std::string(kAtomNamespace), "feed", ""};
    feed.document.namespaces = {{"", std::string(kAtomNamespace)}, {"sx", std::string(kNamespace)}};
    feed.document.children.push_back(
        text_element(xml::Name{std::string(kAtomNamespace), "title", ""}, title));
  } else {
    feed.document.name = xml::Name{"", "rss", ""};
    feed.document.namespaces = {{"sx", std::string(kNamespace)}};
    feed.document.SetAttr("version", "2.0");
    xml::Element channel;
    channel.name = xml::Name{"", "channel", ""};
    channel.children.push_back(text_element(xml::Name{"", "title", ""}, title));
    channel.children.push_back(text_element(xml::Name{"", "description", ""}, title));
    feed.document.children.push_back(xml::Node{std::move(channel)});
  }
  feed.items_position = feed.sharing_position = feed.Container().children.size();
  return feed;
}

const Item* Feed::Find(std::string_view id) const {
  for (const Item& item : items) {
    if (item.sync.id == id) return &item;
  }
  return nullptr;
}

Item* Feed::Find(std::string_view id) { return const_cast<Item*>(std::as_const(*this).Find(id)); }

xml::Element& Feed::Container() {
  return const_cast<xml::Element&>(std::as_const(*this).Container());
}

const xml::Element& Feed::Container() const {
  if (format == Format::kAtom) return document;
  return *document.Child("", "channel");
}

Result<Feed> ParseFeed(std::string_view document, const ReadOptions& options) {
  FeedReader reader(options);
  auto root = xml::Parse(document, options.xml, reader.Sink(), reader.Policy());
  if (!root.ok()) return root.status();
  return reader.Finish(std::move(*root));
}

Result<Feed> ReadFeedFile(const std::string& path, const ReadOptions& options) {
  struct stat st;
  uint64_t bytes =
      stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)
          ? std::min<uint64_t>(static_cast<uint64_t>(st.st_size), options.xml.max_bytes)
          : 0;
  FeedReader reader(options, bytes);
  auto root = xml::ParseFile(path, options.xml, reader.Sink(), reader.Policy());
  if (!root.ok()) return root.status();
  auto feed = reader.Finish(std::move(*root));
  if (!feed.ok()) return InvalidArgumentError(path + ": " + std::string(feed.status().message()));
  return feed;
}

std::vector<Result<Feed>> ReadFeedFiles(std::span<const std::string> paths,
                                        const ReadOptions& options) {
  std::vector<Result<Feed>> feeds(paths.size(), Result<Feed>(UnavailableError("not read")));
  std::vector<std::thread> threads;
  for (size_t k = 1; k < paths.size(); ++k) {
    threads.emplace_back([&, k] { feeds[k] = ReadFeedFile(paths[k], options); });
  }
  if (!paths.empty()) feeds[0] = ReadFeedFile(paths[0], options);
  for (std::thread& thread : threads) thread.join();
  return feeds;
}

namespace {

void WriteFeedTo(xml::Writer& writer, const Feed& feed) {
  writer.Declaration();
  if (feed.format == Format::kAtom) {
    WriteContainer(writer, feed);
  } else {
    writer.Open(feed.document, ElementOnly(feed.document));
    for (const xml::Node& child : feed.document.children) {
      if (child.IsText()) {
        writer.Text(child.text());
      } else if (&child.element() == &feed.Container()) {
        WriteContainer(writer, feed);
      } else {
        writer.Append(child.element());
      }
    }
    writer.Close();
  }
}

}  // namespace

std::string WriteFeed(const Feed& feed) {
  xml::Writer writer(true);
  WriteFeedTo(writer, feed);
  return writer.Take();
}

Status WriteFeedFile(const Feed& feed, const std::string& path) {
  mode_t mode = 0644;
  struct stat st;
  if (stat(path.c_str(), &st) == 0) mode = st.st_mode & 07777;
  auto file = AtomicFile::Create(path, mode);
  if (!file.ok()) return file.status();
  // The document goes to the file a piece at a time, never whole in memory.
  auto write = [&](std::string_view bytes) { (void)file->Append(bytes); };
  {
    xml::Writer writer(true, write);
    WriteFeedTo(writer, feed);
    write(writer.Take());
  }
  return file->Commit();  // reports the first failed write
}

xml::Element ItemElement(const Item& item, Format format) {
  xml::Element element = item.element;
  element.name = ItemName(format);
  xml::Element sync = SyncShell(item.sync);
  for (const History& history : item.sync.history) {
    sync.children.push_back(xml::Node{HistoryElement(history)});
  }
  if (!item.sync.conflicts.empty()) {
    xml::Element conflicts;
    conflicts.name = kConflictsName;
    for (const Item& conflict : item.sync.conflicts) {
      conflicts.children.push_back(xml::Node{ItemElement(conflict, format)});
    }
    sync.children.push_back(xml::Node{std::move(conflicts)});
  }
  element.children.push_back(xml::Node{std::move(sync)});
  return element;
}

Result<Item> ParseItem(const xml::Element& element) {
  Format format = element.name.Is(kAtomNamespace, "entry") ? Format::kAtom : Format::kRss;
  if (!IsItemElement(element, format)) {
    return InvalidArgumentError("not an atom:entry or RSS item: " + element.name.Clark());
  }
  return ParseItemOwned(element, format);
}

// ---- Algorithms ----

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > 1024 || !xml::IsValidText(id)) return false;
  return std::none_of(id.begin(), id.end(),
                      [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

Status Create(Item& item, std::string id, std::string_view by, Timestamp when, bool noconflicts) {
  if (!IsValidId(id)) return InvalidArgumentError("invalid sx:sync id " + Quoted(id));
  if (by.empty() || !xml::IsValidText(by)) {
    return InvalidArgumentError("an endpoint (by) must be non-empty text");
  }
  item.sync = Sync{};
  item.sync.id = std::move(id);
  item.sync.updates = 1;
  item.sync.noconflicts = noconflicts;
  item.sync.history.push_back(History{1, when, std::string(by), {}});
  return Status::Ok();
}

Status Update(Item& item, std::string_view by, Timestamp when) {
  if (Status status = RecordUpdate(item, {}, by, when); !status.ok()) return status;
  // 3.2.4 (our reading): the conflicts this update subsumes are gone now,
  // rather than at the next merge.
  std::erase_if(item.sync.conflicts,
                [&](const Item& conflict) { return Subsumes(item, conflict); });
  return Status::Ok();
}

Status Delete(Item& item, std::string_view by, Timestamp when) {
  if (Status status = Update(item, by, when); !status.ok()) return status;
  item.sync.deleted = true;
  return Status::Ok();
}

bool Subsumes(const History& y, const History& x) {
  if (x.by) return y.by && *y.by == *x.by && y.sequence >= x.sequence;
  return !y.by && y.when == x.when && y.sequence == x.sequence;
}

bool Subsumes(const Item& y, const Item& x) {
  const History& top = x.sync.topmost();
  return std::any_of(y.sync.history.begin(), y.sync.history.end(),
                     [&](const History& h) { return Subsumes(h, top); });
}

bool Wins(const Item& x, const Item& w) {
  if (x.sync.updates != w.sync.updates) return x.sync.updates > w.sync.updates;
  const History& xt = x.sync.topmost();
  const History& wt = w.sync.topmost();
  if (xt.when != wt.when) {
    if (!xt.when || !wt.when) return xt.when.has_value();
    return *xt.when > *wt.when;
  }
  if (xt.by && !wt.by) return true;
  return xt.by && wt.by && *xt.by > *wt.by;  // ordinal byte order (E7)
}

Item MergeItem(Item local, Item incoming, bool* changed) {
  struct Entry {
    Item item;
    bool from_local;
    bool alive = true;
  };
  const auto local_versions =
      changed != nullptr ? VersionsOf(local) : decltype(VersionsOf(local))();
  // Steps 2 and 3: L and I, each item's conflicts first, then the item.
  std::vector<Entry> l, i;
  auto collect = [](std::vector<Entry>& into, Item item, bool from_local) {
    into.reserve(item.sync.conflicts.size() + 1);
    for (Item& conflict : item.sync.conflicts)
      into.push_back(Entry{std::move(conflict), from_local});
    item.sync.conflicts.clear();
    into.push_back(Entry{std::move(item), from_local});
  };
  collect(l, std::move(local), true);
  collect(i, std::move(incoming), false);

  std::vector<Entry*> m;  // step 4
  Entry* w = nullptr;     // step 5
  bool w_is_item = false;
  bool removed_local = false;
  // Step 7, for (outer, inner) = (L, I) and then (I, L): subsumed items
  // leave the outer collection for good, so the second pass sees L shrunk.
  auto pass = [&](std::vector<Entry>& outer, std::vector<Entry>& inner) {
    for (Entry& x : outer) {
      bool subsumed = std::any_of(inner.begin(), inner.end(), [&](const Entry& y) {
        return y.alive && Subsumes(y.item, x.item);
      });
      if (subsumed) {
        x.alive = false;
        if (x.from_local) removed_local = true;
        continue;
      }
      m.push_back(&x);
      // A full tie keeps the current winner: an item over a conflict, so
      // that merging a merged feed again changes nothing.
      bool is_item = &x == &outer.back();
      if (w == nullptr || Wins(x.item, w->item) ||
          (is_item && !w_is_item && !Wins(w->item, x.item))) {
        w = &x;
        w_is_item = is_item;
      }
    }
  };
  pass(l, i);
  pass(i, l);

  // Step 9 (w is never null: of two items, one is not subsumed by the other
  // unless both are, which needs the inner one alive).
  Item result = std::move(w->item);
  bool from_local_item = w == &l.back();
  bool all_local = std::all_of(m.begin(), m.end(), [](const Entry* e) { return e->from_local; });
  if (!result.sync.noconflicts && m.size() > 1) {  // steps 10 and 11
    for (Entry* z : m) {
      if (z != w) result.sync.conflicts.push_back(std::move(z->item));
    }
  }
  if (changed != nullptr) {
    // The same versions arriving again replace the local copies (each
    // subsumes the other); that is no change.
    *changed =
        !(from_local_item && all_local && !removed_local) && VersionsOf(result) != local_versions;
  }
  return result;
}

namespace {

// The positions of a feed's items by sx:sync id, in open addressing. The
// ids are read from the items when compared, never copied: a merge of
// 100,000 items spends no allocation on its index.
class IdIndex {
 public:
  IdIndex(const std::vector<Item>& items, size_t most)
      : items_(items), slots_(std::bit_ceil(std::max<size_t>(16, most * 2)), kEmpty) {}

  // Where the item with `id` is; if none is, records that it will be at
  // `position` and returns nothing.
  std::optional<size_t> FindOrAdd(std::string_view id, size_t position) {
    const size_t mask = slots_.size() - 1;
    for (size_t slot = std::hash<std::string_view>()(id) & mask;; slot = (slot + 1) & mask) {
      if (slots_[slot] == kEmpty) {
        slots_[slot] = position;
        return std::nullopt;
      }
      if (items_[slots_[slot]].sync.id == id) return slots_[slot];
    }
  }

 private:
  static constexpr size_t kEmpty = std::numeric_limits<size_t>::max();
  const std::vector<Item>& items_;
  std::vector<size_t> slots_;
};

}  // namespace

Result<MergeStats> Merge(Feed& local, Feed incoming) {
  MergeStats stats;
  IdIndex index(local.items, local.items.size() + incoming.items.size());
  for (size_t k = 0; k < local.items.size(); ++k) (void)index.FindOrAdd(local.items[k].sync.id, k);
  // Room for every incoming item up front: growing moves every item again.
  local.items.reserve(local.items.size() + incoming.items.size());
  const xml::Name item_name = ItemName(local.format);
  std::function<void(Item&)> rename = [&](Item& item) {
    item.element.name = item_name;
    for (Item& conflict : item.sync.conflicts) rename(conflict);
  };
  for (Item& item : incoming.items) {
    if (incoming.format != local.format) rename(item);
    const std::optional<size_t> at = index.FindOrAdd(item.sync.id, local.items.size());
    if (!at) {
      local.items.push_back(std::move(item));
      ++stats.added;
      if (!local.items.back().sync.conflicts.empty()) ++stats.conflicts;
      continue;
    }
    bool changed = false;
    Item& target = local.items[*at];
    target = MergeItem(std::move(target), std::move(item), &changed);
    ++(changed ? stats.updated : stats.unchanged);
    if (!target.sync.conflicts.empty()) ++stats.conflicts;
  }
  return stats;
}

Status Resolve(Item& item, std::string_view by, Timestamp when, std::optional<size_t> keep) {
  if (keep && *keep >= item.sync.conflicts.size()) {
    return InvalidArgumentError("item " + Quoted(item.sync.id) + " has " +
                                std::to_string(item.sync.conflicts.size()) + " conflicts, no #" +
                                std::to_string(*keep + 1));
  }
  std::vector<Item> conflicts = std::move(item.sync.conflicts);
  item.sync.conflicts.clear();
  Item before = item;  // restored if the update is refused
  if (keep) {
    item.element = conflicts[*keep].element;
    item.sync.deleted = conflicts[*keep].sync.deleted;
  }
  if (Status status = RecordUpdate(item, conflicts, by, when); !status.ok()) {
    item = std::move(before);
    item.sync.conflicts = std::move(conflicts);
    return status;
  }
  size_t insert_at = 1;  // right after the new topmost history, in order
  for (const Item& conflict : conflicts) {
    for (const History& hc : conflict.sync.history) {
      bool subsumed = std::any_of(item.sync.history.begin(), item.sync.history.end(),
                                  [&](const History& hr) { return Subsumes(hr, hc); });
      if (subsumed) continue;
      item.sync.history.insert(item.sync.history.begin() + static_cast<std::ptrdiff_t>(insert_at++),
                               hc);
    }
  }
  return Status::Ok();
}

}  // namespace meshsync::feedsync
