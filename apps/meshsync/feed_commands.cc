#include "feed_commands.h"

#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "cli_util.h"
#include "feed/feed_provider.h"
#include "feed/feedsync.h"
#include "meshsync/env.h"
#include "meshsync/sync.h"
#include "records/record_folder.h"

namespace meshsync::cli {
namespace {

namespace fs = std::filesystem;
using feedsync::Feed;
using feedsync::Format;
using feedsync::Item;

constexpr const char* kFeedUsage =
    "usage: meshsync feed <command> ...\n"
    "  merge LOCAL INCOMING [-o OUT] [--json]\n"
    "        merge INCOMING into LOCAL (FeedSync 3.3); writes OUT (default: LOCAL)\n"
    "  show FEED [--json]          items, versions and conflicts\n"
    "  create FEED --by EP [--id ID] [--title T] [--content T] [--set NAME=VALUE]...\n"
    "         [--noconflicts] [--format atom|rss]\n"
    "                              add an item (the feed is made if missing)\n"
    "  update FEED ID --by EP [--title T] [--content T] [--set NAME=VALUE]... [--unset NAME]...\n"
    "  delete FEED ID --by EP      mark an item deleted (a tombstone)\n"
    "  resolve FEED ID --by EP [--keep N]\n"
    "                              resolve an item's conflicts, keeping conflict N's content\n"
    "                              (from 'show'; default: the current winner)\n"
    "  sync A B [--by EP] [--policy keep-both|a-wins|b-wins] [--json]\n"
    "                              two-way sync of two feeds, or of a feed and a\n"
    "                              folder of items (one text file per item, as\n"
    "                              \"name: value\" lines); metadata in\n"
    "                              DIR/.meshsync/feeds/NAME.db next to a feed and in\n"
    "                              FOLDER/.meshsync/records.db\n";

feedsync::Timestamp Now() {
  return feedsync::Timestamp{static_cast<int64_t>(SystemClock().NowMillis() / 1000), 0};
}

Format FormatForPath(const std::string& path) {
  return path.ends_with(".rss") || path.ends_with(".rss.xml") ? Format::kRss : Format::kAtom;
}

std::string NewUuid() {
  uint64_t hi = SystemRandom().Next64(), lo = SystemRandom().Next64();
  hi = (hi & ~0xF000ull) | 0x4000ull;        // version 4
  lo = (lo & ~(3ull << 62)) | (2ull << 62);  // variant 1
  char buffer[40];
  std::snprintf(buffer, sizeof buffer,
                "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, hi >> 32,
                (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48, lo & uint64_t{0xFFFFFFFFFFFF});
  return buffer;
}

// Options shared by the editing commands.
struct EditOptions {
  std::vector<std::string> positional;
  std::string by;
  std::string id;
  std::optional<std::string> title, content;
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::string> unset;
  std::optional<size_t> keep;
  std::optional<Format> format;
  std::string out;
  std::string policy = "keep-both";
  bool noconflicts = false;
  bool json = false;
};

Result<EditOptions> ParseOptions(const std::vector<std::string>& args, size_t first) {
  EditOptions options;
  for (size_t i = first; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= args.size()) return InvalidArgumentError(arg + " needs a value");
      return args[++i];
    };
    Result<std::string> v = std::string();
    if (arg == "--by") {
      if (!(v = value()).ok()) return v.status();
      options.by = *v;
    } else if (arg == "--id") {
      if (!(v = value()).ok()) return v.status();
      options.id = *v;
    } else if (arg == "--title") {
      if (!(v = value()).ok()) return v.status();
      options.title = *v;
    } else if (arg == "--content") {
      if (!(v = value()).ok()) return v.status();
      options.content = *v;
    } else if (arg == "--set") {
      if (!(v = value()).ok()) return v.status();
      size_t eq = v->find('=');
      if (eq == std::string::npos || eq == 0) {
        return InvalidArgumentError("--set needs NAME=VALUE, not \"" + *v + "\"");
      }
      options.set.emplace_back(v->substr(0, eq), v->substr(eq + 1));
    } else if (arg == "--unset") {
      if (!(v = value()).ok()) return v.status();
      options.unset.push_back(*v);
    } else if (arg == "--keep") {
      if (!(v = value()).ok()) return v.status();
      char* end = nullptr;
      unsigned long n = std::strtoul(v->c_str(), &end, 10);
      if (v->empty() || *end != '\0' || n > 1000000) {
        return InvalidArgumentError("--keep needs a conflict number from 'meshsync feed show'");
      }
      if (n > 0) options.keep = n - 1;
    } else if (arg == "--format") {
      if (!(v = value()).ok()) return v.status();
      if (*v == "atom")
        options.format = Format::kAtom;
      else if (*v == "rss")
        options.format = Format::kRss;
      else
        return InvalidArgumentError("--format is atom or rss, not \"" + *v + "\"");
    } else if (arg == "-o" || arg == "--output") {
      if (!(v = value()).ok()) return v.status();
      options.out = *v;
    } else if (arg == "--policy") {
      if (!(v = value()).ok()) return v.status();
      options.policy = *v;
    } else if (arg == "--noconflicts") {
      options.noconflicts = true;
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg.starts_with("-") && arg != "-") {
      return InvalidArgumentError("unknown option " + arg);
    } else {
      options.positional.push_back(arg);
    }
  }
  return options;
}

Status ApplyFields(Item& item, Format format, const EditOptions& options) {
  std::vector<std::pair<std::string, std::string>> fields;
  if (options.title) fields.emplace_back("title", *options.title);
  if (options.content) {
    fields.emplace_back(format == Format::kAtom ? "content" : "description", *options.content);
  }
  for (const auto& field : options.set) fields.push_back(field);
  for (const auto& [name, value] : fields) {
    if (Status status = feedsync::SetItemField(item, format, name, &value); !status.ok()) {
      return status;
    }
  }
  for (const std::string& name : options.unset) {
    if (Status status = feedsync::SetItemField(item, format, name, nullptr); !status.ok()) {
      return status;
    }
  }
  if (format == Format::kAtom) {  // atom:updated says when the entry changed
    std::string updated = Now().ToString();
    if (Status status = feedsync::SetItemField(item, format, "updated", &updated); !status.ok()) {
      return status;
    }
  }
  return Status::Ok();
}

std::string Title(const Item& item, Format format) {
  const xml::Element* title =
      item.element.Child(format == Format::kAtom ? feedsync::kAtomNamespace : "", "title");
  return title != nullptr ? title->Text() : std::string();
}

std::string HistoryText(const feedsync::History& history) {
  std::string out = "#" + std::to_string(history.sequence);
  if (history.by) out += " by " + *history.by;
  if (history.when) out += " at " + history.when->ToString();
  return out;
}

std::string ItemJson(const Item& item, Format format) {
  std::string out = "{\"id\":" + Json(item.sync.id) +
                    ",\"updates\":" + std::to_string(item.sync.updates) +
                    ",\"deleted\":" + (item.sync.deleted ? "true" : "false") +
                    ",\"title\":" + Json(Title(item, format)) + ",\"history\":[";
  for (size_t k = 0; k < item.sync.history.size(); ++k) {
    const auto& h = item.sync.history[k];
    out += (k ? "," : "") + std::string("{\"sequence\":") + std::to_string(h.sequence);
    if (h.by) out += ",\"by\":" + Json(*h.by);
    if (h.when) out += ",\"when\":" + Json(h.when->ToString());
    out += "}";
  }
  out += "],\"conflicts\":[";
  for (size_t k = 0; k < item.sync.conflicts.size(); ++k) {
    out += (k ? "," : "") + ItemJson(item.sync.conflicts[k], format);
  }
  return out + "]}";
}

int RunShow(const EditOptions& options) {
  if (options.positional.size() != 1) return Usage("feed show needs FEED");
  auto feed = feedsync::ReadFeedFile(options.positional[0]);
  if (!feed.ok()) return Fail(feed.status());
  if (options.json) {
    std::string out = "{\"format\":\"";
    out += feed->format == Format::kAtom ? "atom" : "rss";
    out += "\",\"items\":[";
    for (size_t k = 0; k < feed->items.size(); ++k) {
      out += (k ? "," : "") + ItemJson(feed->items[k], feed->format);
    }
    std::printf("%s]}\n", out.c_str());
    return 0;
  }
  for (const Item& item : feed->items) {
    std::printf("%s  updates %u%s  \"%s\"  (last: %s)\n", item.sync.id.c_str(), item.sync.updates,
                item.sync.deleted ? "  DELETED" : "", Title(item, feed->format).c_str(),
                HistoryText(item.sync.topmost()).c_str());
    for (size_t k = 0; k < item.sync.conflicts.size(); ++k) {
      const Item& conflict = item.sync.conflicts[k];
      std::printf("    conflict %zu: %s\"%s\"  (%s)\n", k + 1,
                  conflict.sync.deleted ? "DELETED " : "", Title(conflict, feed->format).c_str(),
                  HistoryText(conflict.sync.topmost()).c_str());
    }
  }
  return 0;
}

int RunMerge(const EditOptions& options) {
  if (options.positional.size() != 2) return Usage("feed merge needs LOCAL and INCOMING");
  const std::string& local_path = options.positional[0];
  // A merge never looks inside an item (§3.3 reads only sx:sync): the
  // items' content stays as the files wrote it, and is written back so.
  feedsync::ReadOptions read;
  read.keep_item_source = true;
  auto feeds = feedsync::ReadFeedFiles(options.positional, read);
  for (const auto& feed : feeds) {
    if (!feed.ok()) return Fail(feed.status());
  }
  Result<Feed>& local = feeds[0];
  Result<Feed>& incoming = feeds[1];
  auto stats = feedsync::Merge(*local, std::move(*incoming));
  if (!stats.ok()) return Fail(stats.status());
  const std::string out = options.out.empty() ? local_path : options.out;
  if (Status status = feedsync::WriteFeedFile(*local, out); !status.ok()) return Fail(status);
  if (options.json) {
    std::printf("{\"added\":%" PRIu64 ",\"updated\":%" PRIu64 ",\"unchanged\":%" PRIu64
                ",\"conflicts\":%" PRIu64 ",\"items\":%zu}\n",
                stats->added, stats->updated, stats->unchanged, stats->conflicts,
                local->items.size());
  } else {
    std::printf("merged into %s: %" PRIu64 " added, %" PRIu64 " updated, %" PRIu64
                " unchanged; %" PRIu64 " items with conflicts\n",
                out.c_str(), stats->added, stats->updated, stats->unchanged, stats->conflicts);
  }
  // The merged feed is written and flushed to disk; freeing its hundreds of
  // thousands of objects one by one would only make the user wait (a
  // sixth of a 100,000-item merge). The process ends without it.
  std::fflush(stdout);
  std::_Exit(0);
}

// create, update, delete, resolve: read, edit one item, write back.
int RunEdit(const std::string& command, const EditOptions& options) {
  const size_t wanted = command == "create" ? 1 : 2;
  if (options.positional.size() != wanted) {
    return Usage(command == "create" ? "feed create needs FEED" : "this command needs FEED and ID");
  }
  if (options.by.empty()) return Usage("--by ENDPOINT is required: who makes the change");
  const std::string& path = options.positional[0];
  Feed feed;
  std::error_code ec;
  if (command == "create" && !fs::exists(path, ec)) {
    feed = Feed::New(options.format.value_or(FormatForPath(path)), fs::path(path).stem().string());
    if (feed.format == Format::kAtom) {
      std::string id = "urn:uuid:" + NewUuid(), updated = Now().ToString();
      for (auto [name, value] : {std::pair{"id", &id}, std::pair{"updated", &updated}}) {
        xml::Element element;
        element.name = xml::Name{std::string(feedsync::kAtomNamespace), name, ""};
        element.children.push_back(xml::Node{*value});
        feed.document.children.push_back(xml::Node{std::move(element)});
      }
      feed.items_position = feed.sharing_position = feed.document.children.size();
    }
  } else {
    auto read = feedsync::ReadFeedFile(path);
    if (!read.ok()) return Fail(read.status());
    feed = std::move(*read);
  }
  const feedsync::Timestamp now = Now();
  Status status = Status::Ok();
  std::string id;
  if (command == "create") {
    id = options.id.empty() ? NewUuid() : options.id;
    if (feed.Find(id) != nullptr)
      return Fail(InvalidArgumentError("the feed already has item " + id));
    Item item;
    item.element.name = feed.format == Format::kAtom
                            ? xml::Name{std::string(feedsync::kAtomNamespace), "entry", ""}
                            : xml::Name{"", "item", ""};
    if (feed.format == Format::kAtom) {
      std::string atom_id = "urn:uuid:" + NewUuid();
      status = feedsync::SetItemField(item, feed.format, "id", &atom_id);
    }
    if (status.ok()) status = ApplyFields(item, feed.format, options);
    if (status.ok()) status = feedsync::Create(item, id, options.by, now, options.noconflicts);
    if (status.ok()) feed.items.push_back(std::move(item));
  } else {
    id = options.positional[1];
    Item* item = feed.Find(id);
    if (item == nullptr) return Fail(NotFoundError("no item " + id + " in " + path));
    Item edited = *item;
    if (command == "update") {
      edited.sync.deleted = false;
      status = ApplyFields(edited, feed.format, options);
      if (status.ok()) status = feedsync::Update(edited, options.by, now);
    } else if (command == "delete") {
      status = feedsync::Delete(edited, options.by, now);
    } else {
      if (edited.sync.conflicts.empty()) {
        return Fail(FailedPreconditionError("item " + id + " has no conflicts"));
      }
      status = feedsync::Resolve(edited, options.by, now, options.keep);
    }
    if (status.ok()) *item = std::move(edited);
  }
  if (!status.ok()) return Fail(status);
  if (Status written = feedsync::WriteFeedFile(feed, path); !written.ok()) return Fail(written);
  if (command == "create") std::printf("%s\n", id.c_str());
  return 0;
}

// The metadata of the replica a feed file is, DIR/.meshsync/feeds/NAME.db;
// of a folder of items, FOLDER/.meshsync/records.db.
Result<std::string> MetadataPath(const std::string& replica_path, bool folder) {
  fs::path path = fs::absolute(replica_path);
  fs::path dir = folder ? path / ".meshsync" : path.parent_path() / ".meshsync" / "feeds";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  return (dir / (folder ? std::string("records.db") : path.filename().string() + ".db")).string();
}

int RunFeedSync(const EditOptions& options) {
  if (options.positional.size() != 2)
    return Usage("feed sync needs two feeds (or a feed and a folder)");
  SyncOptions sync_options;
  sync_options.batch_size = 100000;  // each batch rewrites a feed file
  if (options.policy == "keep-both")
    sync_options.policy = ConflictPolicy::kKeepBoth;
  else if (options.policy == "a-wins")
    sync_options.policy = ConflictPolicy::kSourceWins;
  else if (options.policy == "b-wins")
    sync_options.policy = ConflictPolicy::kDestinationWins;
  else
    return Usage("--policy is keep-both, a-wins or b-wins");

  struct Side {
    std::unique_ptr<MetadataStore> store;
    std::unique_ptr<Provider> provider;
    RecordFolderProvider* folder = nullptr;
    std::unique_ptr<Replica> replica;
  };
  Side sides[2];
  std::error_code ec;
  if (fs::weakly_canonical(options.positional[0], ec) ==
      fs::weakly_canonical(options.positional[1], ec)) {
    return Fail(InvalidArgumentError("both arguments name the same replica"));
  }
  for (int k = 0; k < 2; ++k) {
    const std::string& path = options.positional[static_cast<size_t>(k)];
    const std::string& other = options.positional[static_cast<size_t>(1 - k)];
    const bool folder = fs::is_directory(path, ec);
    if (folder && fs::weakly_canonical(other, ec).parent_path() == fs::weakly_canonical(path, ec)) {
      return Fail(InvalidArgumentError(other + " is inside the folder " + path +
                                       ", where every file is an item"));
    }
    auto db = MetadataPath(path, folder);
    if (!db.ok()) return Fail(db.status());
    auto store = OpenSqliteStore(
        *db, std::string(folder ? RecordFolderProvider::kName : feedsync::FeedProvider::kName),
        SystemRandom());
    if (!store.ok()) return Fail(store.status());
    sides[k].store = std::move(*store);
    if (folder) {
      auto provider = std::make_unique<RecordFolderProvider>(path);
      sides[k].folder = provider.get();
      sides[k].provider = std::move(provider);
    } else {
      std::string by =
          options.by.empty() ? "meshsync-" + sides[k].store->state().id.ShortName() : options.by;
      sides[k].provider = std::make_unique<feedsync::FeedProvider>(path, by, FormatForPath(path));
    }
    auto replica = Replica::Open(*sides[k].store, *sides[k].provider);
    if (!replica.ok()) return Fail(replica.status());
    sides[k].replica = std::move(*replica);
  }
  // Rounds until nothing is left for the other side: a version a replica
  // made while applying (the FeedSync history a feed wrote for a record
  // that came from a folder) must reach the other replica now, or a later
  // edit there would meet it as a concurrent change.
  std::optional<SyncReport> report;
  for (int round = 1;; ++round) {
    auto session = Synchronize(*sides[0].replica, *sides[1].replica, sync_options);
    if (!session.ok()) return Fail(session.status());
    if (!report) {
      report = std::move(*session);
    } else {
      report->a_to_b.Add(session->a_to_b);
      report->b_to_a.Add(session->b_to_a);
      report->a_to_b.errors = std::move(session->a_to_b.errors);
      report->b_to_a.errors = std::move(session->b_to_a.errors);
    }
    uint64_t left = session->a_to_b.local_versions + session->b_to_a.local_versions;
    if (left == 0 || round == 4) break;
  }
  auto direction = [](const DirectionReport& d) {
    return "{\"created\":" + std::to_string(d.created) +
           ",\"updated\":" + std::to_string(d.updated) +
           ",\"deleted\":" + std::to_string(d.deleted) +
           ",\"conflicts\":" + std::to_string(d.conflicts) +
           ",\"errors\":" + std::to_string(d.errors.size()) + "}";
  };
  if (options.json) {
    std::printf("{\"a_to_b\":%s,\"b_to_a\":%s}\n", direction(report->a_to_b).c_str(),
                direction(report->b_to_a).c_str());
  } else {
    for (const auto& [name, d] :
         {std::pair{"A -> B", &report->a_to_b}, {"B -> A", &report->b_to_a}}) {
      std::printf("%s: %" PRIu64 " created, %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
                  " conflicts\n",
                  name, d->created, d->updated, d->deleted, d->conflicts);
    }
  }
  int failed = 0;
  for (const Side& side : sides) {
    if (side.folder == nullptr) continue;
    for (const std::string& problem : side.folder->problems()) {
      std::fprintf(stderr, "meshsync: left alone, not a record: %s/%s\n",
                   options.positional[static_cast<size_t>(&side - sides)].c_str(), problem.c_str());
      failed = 1;
    }
  }
  for (const DirectionReport* d : {&report->a_to_b, &report->b_to_a}) {
    for (const ItemError& error : d->errors) {
      std::fprintf(stderr, "meshsync: item %s not synced: %s\n", error.item.ToHex().c_str(),
                   std::string(error.status.message()).c_str());
      failed = 1;
    }
  }
  return failed;
}

}  // namespace

int RunFeed(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    std::fputs(kFeedUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string& command = args[0];
  auto options = ParseOptions(args, 1);
  if (!options.ok()) return Usage(std::string(options.status().message()).c_str());
  if (command == "show") return RunShow(*options);
  if (command == "merge") return RunMerge(*options);
  if (command == "sync") return RunFeedSync(*options);
  if (command == "create" || command == "update" || command == "delete" || command == "resolve") {
    return RunEdit(command, *options);
  }
  return Usage(("unknown feed command '" + command + "'").c_str());
}

}  // namespace meshsync::cli
