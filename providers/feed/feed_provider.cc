#include "feed/feed_provider.h"

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <set>

#include "meshsync/record.h"

namespace meshsync::feedsync {
namespace {

constexpr std::string_view kXmlSuffix = "#xml";

constexpr std::string_view kOwnIdPrefix = "meshsync-";

std::string_view OwnNamespace(Format format) {
  return format == Format::kAtom ? kAtomNamespace : std::string_view();
}

std::string FieldBase(const xml::Name& name, Format format) {
  if (name.uri == OwnNamespace(format)) return name.local;
  return "{" + std::string(name.uri.view()) + "}" + name.local;
}

struct FieldName {
  std::string uri;
  std::string local;
  bool xml = false;
};

Result<FieldName> ParseFieldName(std::string_view name, Format format) {
  FieldName out;
  if (name.ends_with(kXmlSuffix)) {
    out.xml = true;
    name.remove_suffix(kXmlSuffix.size());
  }
  if (name.starts_with("{")) {
    size_t close = name.find('}');
    if (close == std::string_view::npos) {
      return InvalidArgumentError("field name \"" + std::string(name) + "\" has no closing }");
    }
    out.uri = std::string(name.substr(1, close - 1));
    out.local = std::string(name.substr(close + 1));
  } else {
    out.uri = std::string(OwnNamespace(format));
    out.local = std::string(name);
  }
  if (!xml::IsNcName(out.local) || !xml::IsValidText(out.uri) ||
      out.uri.find_first_of("<>\"{}") != std::string::npos) {
    return InvalidArgumentError("field name \"" + std::string(name.substr(0, 80)) +
                                "\" cannot be an XML element name");
  }
  if (out.uri == kNamespace) {
    return InvalidArgumentError("field \"" + std::string(name) + "\" is FeedSync's own");
  }
  return out;
}

using Hashes = FieldHashes;

// The item's version for kSyncField: its sx:sync without conflicts.
std::string VersionOf(const Item& item) {
  Item bare;
  bare.element.name = xml::Name{"", "v", ""};
  bare.sync = item.sync;
  bare.sync.conflicts.clear();
  xml::Element element = ItemElement(bare, Format::kRss);
  return xml::WriteFragment(element.children.back().element());
}

// Takes the version in `value` (kSyncField) for `item`, keeping its conflicts.
Status AdoptVersion(Item& item, const std::string& value) {
  auto parsed = xml::Parse("<item>" + value + "</item>");
  if (!parsed.ok())
    return InvalidArgumentError("bad FeedSync version: " + std::string(parsed.status().message()));
  auto version = ParseItem(*parsed);
  if (!version.ok())
    return InvalidArgumentError("bad FeedSync version: " + std::string(version.status().message()));
  if (!item.sync.id.empty() && version->sync.id != item.sync.id) {
    return InvalidArgumentError("FeedSync version of item \"" + version->sync.id +
                                "\" given for item \"" + item.sync.id + "\"");
  }
  std::vector<Item> conflicts = std::move(item.sync.conflicts);
  item.sync = std::move(version->sync);
  item.sync.conflicts = std::move(conflicts);
  return Status::Ok();
}

// The item's fields with its id, keyed by unit. kInvalidArgument when two
// field names share a unit (a 32-bit hash collision): the item is skipped.
Result<std::map<ChangeUnitId, std::pair<std::string, std::string>>> UnitsOf(const Item& item,
                                                                            Format format) {
  std::map<ChangeUnitId, std::pair<std::string, std::string>> units;
  auto fields = ItemFields(item, format);
  fields.emplace(std::string(kIdField), item.sync.id);
  fields.emplace(std::string(kSyncField), VersionOf(item));
  for (auto& [name, value] : fields) {
    auto [it, inserted] =
        units.emplace(ChangeUnitIdFromName(name), std::make_pair(name, std::move(value)));
    if (!inserted) {
      return InvalidArgumentError("item \"" + item.sync.id + "\": fields \"" + it->second.first +
                                  "\" and \"" + name + "\" cannot be told apart");
    }
  }
  return units;
}

Hashes HashesOf(const std::map<ChangeUnitId, std::pair<std::string, std::string>>& units) {
  Hashes hashes;
  for (const auto& [unit, field] : units) {
    hashes[unit] = FieldHashOf(field.first, field.second);
  }
  return hashes;
}

// Two independent 64-bit hashes make the 128-bit id of a feed item first
// seen in a feed, so two feeds that hold the same FeedSync item (merged
// outside meshsync) name it alike.
ItemId DerivedId(std::string_view sync_id, int salt) {
  std::string seed = "feedsync-item:" + std::to_string(salt) + ":";
  return ItemId(FieldHash(seed + "hi:" + std::string(sync_id)),
                FieldHash(seed + "lo:" + std::string(sync_id)));
}

}  // namespace

std::map<std::string, std::string> ItemFields(const Item& item, Format format) {
  // Group the item's child elements by name, in order of first appearance.
  std::vector<std::pair<std::string, std::vector<const xml::Element*>>> groups;
  std::map<std::string, size_t> group_of;
  for (const xml::Node& child : item.element.children) {
    if (child.IsText()) continue;
    std::string base = FieldBase(child.element().name, format);
    auto [it, inserted] = group_of.emplace(base, groups.size());
    if (inserted) groups.emplace_back(base, std::vector<const xml::Element*>());
    groups[it->second].second.push_back(&child.element());
  }
  std::map<std::string, std::string> fields;
  for (const auto& [base, elements] : groups) {
    const xml::Element& first = *elements.front();
    if (elements.size() == 1 && first.attributes.empty() && first.namespaces.empty() &&
        first.IsTextOnly()) {
      fields[base] = first.Text();
      continue;
    }
    std::string value;
    for (const xml::Element* element : elements) value += xml::WriteFragment(*element);
    fields[base + std::string(kXmlSuffix)] = std::move(value);
  }
  return fields;
}

Status SetItemField(Item& item, Format format, const std::string& name, const std::string* value) {
  auto field = ParseFieldName(name, format);
  if (!field.ok()) return field.status();
  std::vector<xml::Element> replacement;
  if (value != nullptr && field->xml) {
    auto wrapper = xml::Parse("<w>" + *value + "</w>");
    if (!wrapper.ok()) {
      return InvalidArgumentError("field \"" + name +
                                  "\" is not XML: " + std::string(wrapper.status().message()));
    }
    for (xml::Node& node : wrapper->children) {
      if (node.IsText()) {
        if (node.text().find_first_not_of(" \t\r\n") != std::string::npos) {
          return InvalidArgumentError("field \"" + name + "\" holds text outside its elements");
        }
        continue;
      }
      if (!node.element().name.Is(field->uri, field->local)) {
        return InvalidArgumentError("field \"" + name + "\" holds a " +
                                    node.element().name.Clark() + " element");
      }
      replacement.push_back(std::move(node.element()));
    }
  } else if (value != nullptr) {
    if (!xml::IsValidText(*value)) {
      return InvalidArgumentError("field \"" + name + "\" holds bytes XML cannot carry");
    }
    xml::Element element;
    element.name = xml::Name{field->uri, field->local, ""};
    if (!value->empty()) element.children.push_back(xml::Node{*value});
    replacement.push_back(std::move(element));
  }
  auto& children = item.element.children;
  size_t position = children.size();
  for (size_t k = 0; k < children.size(); ++k) {
    if (!children[k].IsText() && children[k].element().name.Is(field->uri, field->local)) {
      position = std::min(position, k);
    }
  }
  std::erase_if(children, [&](const xml::Node& child) {
    return !child.IsText() && child.element().name.Is(field->uri, field->local);
  });
  position = std::min(position, children.size());
  for (xml::Element& element : replacement) {
    children.insert(children.begin() + static_cast<std::ptrdiff_t>(position++),
                    xml::Node{std::move(element)});
  }
  return Status::Ok();
}

// ---- FeedProvider ----

FeedProvider::FeedProvider(std::string path, std::string endpoint, Format format_for_new,
                           Clock& clock)
    : path_(std::move(path)),
      endpoint_(std::move(endpoint)),
      format_for_new_(format_for_new),
      clock_(clock) {}

FeedProvider::FileIdentity FeedProvider::Identify(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return FileIdentity{};
  return FileIdentity{true, static_cast<uint64_t>(st.st_size),
                      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                      static_cast<uint64_t>(st.st_ino)};
}

Status FeedProvider::Load() {
  identity_ = Identify(path_);
  if (!identity_.exists) {
    size_t slash = path_.rfind('/');
    feed_ =
        Feed::New(format_for_new_, slash == std::string::npos ? path_ : path_.substr(slash + 1));
  } else {
    auto feed = ReadFeedFile(path_);
    if (!feed.ok()) return feed.status();
    feed_ = std::move(*feed);
  }
  index_.clear();
  for (size_t k = 0; k < feed_.items.size(); ++k) index_.emplace(feed_.items[k].sync.id, k);
  loaded_ = true;
  dirty_ = false;
  return Status::Ok();
}

Timestamp FeedProvider::Now() {
  return Timestamp{static_cast<int64_t>(clock_.NowMillis() / 1000), 0};
}

Item* FeedProvider::FindItem(std::string_view id) {
  auto it = index_.find(std::string(id));
  return it == index_.end() ? nullptr : &feed_.items[it->second];
}

Status FeedProvider::DetectChanges(ChangeRecorder& recorder) {
  if (Status status = Load(); !status.ok()) return status;
  std::set<std::string> seen;
  for (const Item& item : feed_.items) {
    seen.insert(item.sync.id);
    auto units = UnitsOf(item, feed_.format);
    if (!units.ok()) continue;  // not syncable; stays in the file as it is
    Hashes hashes = HashesOf(*units);
    std::string state = EncodeFieldHashes(hashes);
    auto existing = recorder.FindByKey(item.sync.id);
    if (!existing.ok()) return existing.status();
    std::vector<ChangeUnitId> all;
    for (const auto& [unit, field] : *units) all.push_back(unit);

    if (!existing->has_value() || (*existing)->tombstone) {
      if (item.sync.deleted) continue;
      LocalChange change;
      if (existing->has_value()) {
        change.id = (*existing)->id;  // re-created
      } else if (item.sync.id.starts_with(kOwnIdPrefix)) {
        // An id meshsync gave the item; unless another item already has it.
        auto own = Id128::FromHex(std::string_view(item.sync.id).substr(kOwnIdPrefix.size()));
        if (own.ok()) {
          auto taken = recorder.FindItem(ItemId(*own));
          if (!taken.ok()) return taken.status();
          if (!taken->has_value() || (*taken)->key == item.sync.id) change.id = ItemId(*own);
        }
      }
      for (int salt = 0; !change.id.has_value(); ++salt) {
        ItemId candidate = DerivedId(item.sync.id, salt);
        auto taken = recorder.FindItem(candidate);
        if (!taken.ok()) return taken.status();
        if (!taken->has_value()) change.id = candidate;
      }
      change.changed_units = std::move(all);
      change.key = item.sync.id;
      change.provider_state = std::move(state);
      auto recorded = recorder.Record(std::move(change));
      if (!recorded.ok()) return recorded.status();
      continue;
    }

    const ItemMetadata& meta = **existing;
    LocalChange change;
    change.id = meta.id;
    change.key = item.sync.id;
    change.provider_state = state;
    if (item.sync.deleted) {
      change.deleted = true;
    } else {
      if (state == meta.provider_state) continue;
      change.changed_units = ChangedUnits(DecodeFieldHashes(meta.provider_state), hashes);
    }
    auto recorded = recorder.Record(std::move(change));
    if (!recorded.ok()) return recorded.status();
  }
  // Items removed from the file by hand are deletions.
  return recorder.RecordDeletions(
      [&](const ItemMetadata& meta) { return !seen.contains(meta.key); });
}

Status FeedProvider::LoadChangeData(const ItemMetadata& meta, std::span<const ChangeUnitId> units,
                                    std::vector<UnitData>& out) {
  if (!loaded_) {
    if (Status status = Load(); !status.ok()) return status;
  }
  const Item* item = FindItem(meta.key);
  if (item == nullptr || item->sync.deleted) {
    return NotFoundError("feed item \"" + meta.key + "\" is gone");
  }
  auto fields = UnitsOf(*item, feed_.format);
  if (!fields.ok()) return fields.status();
  for (ChangeUnitId unit : units) {
    auto it = fields->find(unit);
    if (it == fields->end()) continue;  // removed
    out.push_back(UnitData{unit, EncodeField(it->second.first, it->second.second)});
  }
  return Status::Ok();
}

Result<SaveResult> FeedProvider::SaveChange(const SaveRequest& request) {
  if (!loaded_) {
    if (Status status = Load(); !status.ok()) return status;
  }
  const Timestamp now = Now();
  Item* item = request.local != nullptr ? FindItem(request.local->key) : nullptr;

  if (request.action == SaveAction::kDelete) {
    if (item != nullptr && !item->sync.deleted) {
      if (Status status = Delete(*item, endpoint_, now); !status.ok()) return status;
      dirty_ = true;
    }
    return SaveResult{request.local != nullptr ? request.local->key : std::string(),
                      request.local != nullptr ? request.local->provider_state : std::string(),
                      {}};
  }

  // The fields to set, checked before anything changes.
  std::vector<std::pair<std::string, std::string>> fields;
  std::string sync_id;
  std::optional<std::string> version;
  for (const UnitData& unit : request.units) {
    std::string name, value;
    if (Status status = DecodeField(unit.data, name, value); !status.ok()) return status;
    if (name == kIdField) {
      sync_id = value;
    } else if (name == kSyncField) {
      version = std::move(value);
    } else {
      fields.emplace_back(std::move(name), std::move(value));
    }
  }
  Item updated;
  bool existed = false;
  if (item == nullptr && request.action == SaveAction::kCreate) {
    if (!IsValidId(sync_id)) sync_id = std::string(kOwnIdPrefix) + request.id.ToHex();
    item = FindItem(sync_id);  // a tombstone (or an item never synced) with this id
  }
  if (item != nullptr) {
    updated = *item;
    existed = true;
  } else if (request.action == SaveAction::kUpdate) {
    return NotFoundError("feed item \"" + (request.local ? request.local->key : "") +
                         "\" is gone from " + path_);
  } else {
    updated.element.name = feed_.format == Format::kAtom
                               ? xml::Name{std::string(kAtomNamespace), "entry", ""}
                               : xml::Name{"", "item", ""};
  }
  if (request.action == SaveAction::kCreate && existed) {
    // Every unit is given: fields the item has and the change lacks go.
    for (const auto& field : ItemFields(updated, feed_.format)) {
      const std::string& name = field.first;
      bool kept = std::any_of(fields.begin(), fields.end(),
                              [&](const auto& given) { return given.first == name; });
      if (!kept) {
        if (Status status = SetItemField(updated, feed_.format, name, nullptr); !status.ok()) {
          return status;
        }
      }
    }
  }
  for (const auto& [name, value] : fields) {
    if (Status status = SetItemField(updated, feed_.format, name, &value); !status.ok()) {
      return status;
    }
  }
  if (!request.removed_units.empty()) {
    auto current = UnitsOf(updated, feed_.format);
    if (!current.ok()) return current.status();
    for (ChangeUnitId unit : request.removed_units) {
      auto it = current->find(unit);
      if (it == current->end() || it->second.first == kIdField || it->second.first == kSyncField) {
        continue;
      }
      if (Status status = SetItemField(updated, feed_.format, it->second.first, nullptr);
          !status.ok()) {
        return status;
      }
    }
  }
  std::vector<ChangeUnitId> rewritten;
  if (version) {
    if (!existed) updated.sync.id = sync_id;
    if (Status status = AdoptVersion(updated, *version); !status.ok()) return status;
    updated.sync.deleted = false;
  } else if (existed) {
    updated.sync.deleted = false;
    if (Status status = Update(updated, endpoint_, now); !status.ok()) return status;
    rewritten.push_back(ChangeUnitIdFromName(kSyncField));
  } else {
    if (Status status = Create(updated, sync_id, endpoint_, now); !status.ok()) return status;
    rewritten.push_back(ChangeUnitIdFromName(kSyncField));
  }
  auto units = UnitsOf(updated, feed_.format);
  if (!units.ok()) return units.status();
  std::string key = updated.sync.id;
  if (existed) {
    *item = std::move(updated);
  } else {
    index_.emplace(key, feed_.items.size());
    feed_.items.push_back(std::move(updated));
  }
  dirty_ = true;
  return SaveResult{key, EncodeFieldHashes(HashesOf(*units)), std::move(rewritten)};
}

Status FeedProvider::CommitChanges() {
  if (!dirty_) return Status::Ok();
  if (Identify(path_) != identity_) {
    return UnavailableError(path_ + " changed while it was being synced; sync again");
  }
  if (Status status = WriteFeedFile(feed_, path_); !status.ok()) return status;
  identity_ = Identify(path_);
  dirty_ = false;
  return Status::Ok();
}

}  // namespace meshsync::feedsync
