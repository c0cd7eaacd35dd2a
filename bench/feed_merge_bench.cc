// Merges two FeedSync feeds of N items each (default 100,000): times the
// command a user runs, `meshsync feed merge LOCAL INCOMING -o OUT`, as a
// process of its own, and shows where the time goes (read, merge, write)
// in another fresh process doing the same work with the library. Half the
// ids are shared; of those, half were updated concurrently on both sides
// (conflicts), a quarter on one side only. The goal (1 s for 100,000 items)
// is judged on the command's median time.
//
//   feed_merge_bench [-n ITEMS] [-r RUNS] [--dir DIR] [--meshsync PATH]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "feed/feedsync.h"
#include "meshsync/env.h"

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
  item.element.children.back().element().children.at(0).text() += " Edited by " + by + ".";
  if (!Update(item, by, Timestamp{when, 0}).ok()) std::abort();
}

// Runs `args` and waits for it; returns its wall time, or -1 if it failed.
// `quiet`: its standard output goes to /dev/null.
double RunProcess(std::vector<std::string> args, bool quiet) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    if (quiet && freopen("/dev/null", "w", stdout) == nullptr) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    return -1;
  }
  return Seconds(start);
}

// The command's work with the library, phase by phase, printed on one line.
int Phases(const std::string& dir) {
  auto start = std::chrono::steady_clock::now();
  const std::string paths[] = {dir + "/local.atom", dir + "/incoming.atom"};
  ReadOptions options;  // as the command reads them
  options.keep_item_source = true;
  auto feeds = ReadFeedFiles(paths, options);
  if (!feeds[0].ok() || !feeds[1].ok()) return 1;
  double read = Seconds(start);
  auto merge_start = std::chrono::steady_clock::now();
  auto stats = Merge(*feeds[0], std::move(*feeds[1]));
  if (!stats.ok()) return 1;
  double merge = Seconds(merge_start);
  auto write_start = std::chrono::steady_clock::now();
  if (!WriteFeedFile(*feeds[0], dir + "/merged-phases.atom").ok()) return 1;
  double write = Seconds(write_start);
  std::printf(" %9.3fs %9.3fs %9.3fs %9.3fs", read, merge, write, Seconds(start));
  std::fflush(stdout);
  std::_Exit(0);  // as the command does: no freeing at the end
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && !std::strcmp(argv[1], "--phases")) {
    ReexecWithHugePageHeap(argv);  // as the command does
    return Phases(argv[2]);
  }

  size_t n = 100000;
  int runs = 3;
  std::string dir = "/tmp/meshsync-feed-bench";
  std::string meshsync = MESHSYNC_BIN;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "-n") && i + 1 < argc)
      n = std::strtoul(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "-r") && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!std::strcmp(argv[i], "--meshsync") && i + 1 < argc)
      meshsync = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: feed_merge_bench [-n ITEMS] [-r RUNS] [--dir DIR] [--meshsync PATH]\n");
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
  std::printf("%-5s %12s | %10s %10s %10s %10s\n", "run", "command", "read", "merge", "write",
              "sum");
  std::vector<double> times;
  for (int run = 1; run <= runs; ++run) {
    double command = RunProcess(
        {meshsync, "feed", "merge", local_path, incoming_path, "-o", dir + "/merged.atom"}, true);
    if (command < 0) {
      std::fprintf(stderr, "%s feed merge failed\n", meshsync.c_str());
      return 1;
    }
    times.push_back(command);
    std::printf("%-5d %11.3fs |", run, command);
    std::fflush(stdout);
    if (RunProcess({"/proc/self/exe", "--phases", dir}, false) < 0) {
      std::fprintf(stderr, "the phases run failed\n");
      return 1;
    }
    std::printf("\n");
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double goal = static_cast<double>(n) / 100000;
  std::printf("meshsync feed merge: median %.3f s, best %.3f s; goal <= %.3f s: %s\n", median,
              times.front(), goal, median <= goal ? "met" : "NOT met");
  return 0;
}
