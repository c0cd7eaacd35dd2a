// Merges two FeedSync feeds of N items each (default 100,000), as
// `meshsync feed merge` does: read both files, merge, write the result.
// Half the ids are shared; of those, half were updated concurrently on both
// sides (conflicts), a quarter on one side only. Prints each phase and the
// total against the goal (1 s for 100,000 items).
//
//   feed_merge_bench [-n ITEMS] [-r RUNS] [--dir DIR]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "feed/feedsync.h"

using namespace meshsync;
using namespace meshsync::feedsync;

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void AddText(xml::Element& parent, std::string name, std::string text) {
  xml::Element element;
  element.name = xml::Name{std::string(kAtomNamespace), std::move(name), ""};
  element.children.push_back(xml::Node{std::move(text)});
  parent.children.push_back(xml::Node{std::move(element)});
}

Item MakeItem(size_t n, const std::string& by, int64_t when) {
  Item item;
  item.element.name = xml::Name{std::string(kAtomNamespace), "entry", ""};
  AddText(item.element, "title", "Item number " + std::to_string(n));
  AddText(item.element, "id",
          "urn:uuid:00000000-0000-4000-8000-" + std::to_string(100000000000 + n));
  AddText(item.element, "updated", Timestamp{when, 0}.ToString());
  AddText(item.element, "content",
          "Something to do, written by " + by + ", number " + std::to_string(n) +
              ": buy milk, eggs, butter and bread.");
  if (!Create(item, "item-" + std::to_string(n), by, Timestamp{when, 0}).ok()) std::abort();
  return item;
}

// Endpoint `by` edits a shared item.
void Touch(Item& item, const std::string& by, int64_t when) {
  std::get<0>(item.element.children.back().element().children.at(0).value) +=
      " Edited by " + by + ".";
  if (!Update(item, by, Timestamp{when, 0}).ok()) std::abort();
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = 100000;
  int runs = 3;
  std::string dir = "/tmp/meshsync-feed-bench";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "-n") && i + 1 < argc)
      n = std::strtoul(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "-r") && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: feed_merge_bench [-n ITEMS] [-r RUNS] [--dir DIR]\n");
      return 2;
    }
  }
  std::filesystem::create_directories(dir);
  const std::string local_path = dir + "/local.atom", incoming_path = dir + "/incoming.atom";
  {
    Feed local = Feed::New(Format::kAtom, "local"), incoming = Feed::New(Format::kAtom, "incoming");
    const int64_t t0 = 1'700'000'000;
    // Ids [0, n/2) shared; [n/2, n) local only; [n, 3n/2) incoming only.
    for (size_t k = 0; k < n; ++k) local.items.push_back(MakeItem(k, "laptop", t0));
    for (size_t k = 0; k < n / 2; ++k) incoming.items.push_back(local.items[k]);
    for (size_t k = n; k < n + n / 2; ++k) incoming.items.push_back(MakeItem(k, "phone", t0));
    for (size_t k = 0; k < n / 2; ++k) {
      if (k % 4 == 0) {  // concurrent: a conflict
        Touch(local.items[k], "laptop", t0 + 10);
        Touch(incoming.items[k], "phone", t0 + 20);
      } else if (k % 4 == 1) {
        Touch(incoming.items[k], "phone", t0 + 30);
      }
    }
    if (!WriteFeedFile(local, local_path).ok() || !WriteFeedFile(incoming, incoming_path).ok()) {
      std::fprintf(stderr, "cannot write the feeds under %s\n", dir.c_str());
      return 1;
    }
  }
  std::printf("feed merge: %zu + %zu items (%.1f MiB + %.1f MiB), %d runs\n", n, n,
              std::filesystem::file_size(local_path) / 1048576.0,
              std::filesystem::file_size(incoming_path) / 1048576.0, runs);
  std::printf("%-8s %10s %10s %10s %10s %10s\n", "run", "read", "merge", "write", "total", "goal");
  double best = 1e9;
  for (int run = 1; run <= runs; ++run) {
    auto start = std::chrono::steady_clock::now();
    const std::string paths[] = {local_path, incoming_path};
    auto feeds = ReadFeedFiles(paths);
    auto& local = feeds[0];
    auto& incoming = feeds[1];
    if (!local.ok() || !incoming.ok()) return 1;
    double read = Seconds(start);
    auto merge_start = std::chrono::steady_clock::now();
    auto stats = Merge(*local, std::move(*incoming));
    if (!stats.ok()) return 1;
    double merge = Seconds(merge_start);
    auto write_start = std::chrono::steady_clock::now();
    if (!WriteFeedFile(*local, dir + "/merged.atom").ok()) return 1;
    double write = Seconds(write_start);
    double total = Seconds(start);
    best = std::min(best, total);
    std::printf("%-8d %9.3fs %9.3fs %9.3fs %9.3fs %9.3fs\n", run, read, merge, write, total,
                1.0 * static_cast<double>(n) / 100000);
    if (run == 1) {
      std::printf("         (%llu added, %llu updated, %llu unchanged, %llu with conflicts)\n",
                  static_cast<unsigned long long>(stats->added),
                  static_cast<unsigned long long>(stats->updated),
                  static_cast<unsigned long long>(stats->unchanged),
                  static_cast<unsigned long long>(stats->conflicts));
    }
  }
  std::printf("best %.3f s; goal <= %.3f s: %s\n", best, static_cast<double>(n) / 100000,
              best <= static_cast<double>(n) / 100000 ? "met" : "NOT met");
  return 0;
}
