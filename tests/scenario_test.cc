// Runs every tests/scenarios/*.scenario file: small declarative descriptions
// of replicas, edits, syncs and expected states (see tests/README.md for the
// language). One file, one test.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "testing/test_replica.h"

namespace meshsync {
namespace {

namespace fs = std::filesystem;

using Node = testing::TestReplica;

class Scenario {
 public:
  explicit Scenario(fs::path file) : file_(std::move(file)) {}
  ~Scenario() {
    if (!temp_dir_.empty()) fs::remove_all(temp_dir_);
  }

  void Run() {
    std::ifstream in(file_);
    ASSERT_TRUE(in) << "cannot read " << file_;
    std::string line;
    while (std::getline(in, line)) {
      ++line_number_;
      if (size_t hash = line.find('#'); hash != std::string::npos) line.erase(hash);
      std::istringstream words(line);
      std::vector<std::string> args;
      for (std::string word; words >> word;) args.push_back(word);
      if (args.empty()) continue;
      SCOPED_TRACE(file_.filename().string() + ":" + std::to_string(line_number_) + ": " + line);
      Execute(args);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

 private:
  static std::map<std::string, std::string> Options(const std::vector<std::string>& args,
                                                    size_t from) {
    std::map<std::string, std::string> options;
    for (size_t idx = from; idx < args.size(); ++idx) {
      size_t eq = args[idx].find('=');
      if (eq == std::string::npos) {
        options[args[idx]] = "";
      } else {
        options[args[idx].substr(0, eq)] = args[idx].substr(eq + 1);
      }
    }
    return options;
  }

  Node& NodeNamed(const std::string& name) {
    auto it = nodes_.find(name);
    if (it == nodes_.end()) {
      ADD_FAILURE() << "unknown replica " << name;
      static Node none(0);
      return none;
    }
    return *it->second;
  }

  static ItemId ItemNamed(const std::string& name) {
    // Derived from the name, so a scenario reads the same on every run.
    uint64_t hash = 1469598103934665603ull;
    for (char c : name) hash = (hash ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    return ItemId(hash, hash * 31 + name.size());
  }

  void AddReplicas(const std::vector<std::string>& args) {
    auto options = Options(args, 1);
    bool sqlite = options.count("store=sqlite") > 0 || options["store"] == "sqlite";
    if (sqlite && temp_dir_.empty()) {
      std::string pattern = (fs::temp_directory_path() / "meshsync-scenario-XXXXXX").string();
      temp_dir_ = mkdtemp(pattern.data());
    }
    for (size_t idx = 1; idx < args.size(); ++idx) {
      if (args[idx].find('=') != std::string::npos) continue;
      std::string path = sqlite ? (fs::path(temp_dir_) / (args[idx] + ".db")).string() : "";
      auto made = Node::Make(nodes_.size() + 1, path);
      ASSERT_TRUE(made.ok()) << made.status().ToString();
      auto node = std::move(*made);
      nodes_[args[idx]] = std::move(node);
    }
  }

  void Sync(const std::vector<std::string>& args) {
    ASSERT_GE(args.size(), 3u);
    auto options = Options(args, 3);
    SyncOptions sync;
    static const std::map<std::string, ConflictPolicy> kPolicies = {
        {"keep-both", ConflictPolicy::kKeepBoth},
        {"source-wins", ConflictPolicy::kSourceWins},
        {"destination-wins", ConflictPolicy::kDestinationWins},
        {"merge", ConflictPolicy::kMerge},
        {"defer", ConflictPolicy::kDefer}};
    static const std::map<std::string, SyncDirection> kDirections = {
        {"two-way", SyncDirection::kTwoWay},
        {"a-to-b", SyncDirection::kAToB},
        {"b-to-a", SyncDirection::kBToA}};
    if (options.count("policy")) {
      ASSERT_TRUE(kPolicies.count(options["policy"])) << "unknown policy";
      sync.policy = kPolicies.at(options["policy"]);
    }
    if (options.count("direction")) {
      ASSERT_TRUE(kDirections.count(options["direction"])) << "unknown direction";
      sync.direction = kDirections.at(options["direction"]);
    }
    if (options.count("batch")) sync.batch_size = std::stoul(options["batch"]);
    if (options.count("no-recovery")) sync.allow_recovery = false;
    int cancel_after = options.count("cancel-after") ? std::stoi(options["cancel-after"]) : -1;
    int batches_started = 0;
    if (cancel_after >= 0) {
      sync.should_cancel = [&] { return batches_started++ >= cancel_after; };
    }
    auto result = Synchronize(*NodeNamed(args[1]).replica, *NodeNamed(args[2]).replica, sync);
    std::string expect = options.count("expect") ? options["expect"] : "ok";
    if (expect == "error") {
      EXPECT_FALSE(result.ok()) << "sync was expected to fail";
      return;
    }
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    last_ = *result;
    EXPECT_EQ(last_.cancelled, expect == "cancelled");
  }

  void Expect(const std::vector<std::string>& args) {
    ASSERT_GE(args.size(), 2u);
    const std::string& what = args[1];
    if (what == "same") {
      for (size_t idx = 3; idx < args.size(); ++idx) {
        EXPECT_EQ(NodeNamed(args[2]).provider.records(), NodeNamed(args[idx]).provider.records())
            << args[2] << " and " << args[idx] << " differ";
      }
    } else if (what == "plain") {
      for (size_t idx = 2; idx < args.size(); ++idx) {
        const Knowledge& k = NodeNamed(args[idx]).replica->state().knowledge;
        EXPECT_TRUE(k.IsPlainVector()) << args[idx] << " knowledge: " << k.ToString();
      }
    } else if (what == "conflicts") {
      ASSERT_EQ(args.size(), 4u);
      auto conflicts = NodeNamed(args[2]).store->ListConflicts();
      ASSERT_TRUE(conflicts.ok());
      EXPECT_EQ(conflicts->size(), std::stoul(args[3])) << "conflicts at " << args[2];
    } else if (what == "conflict-data") {  // expect conflict-data A x field=value
      ASSERT_EQ(args.size(), 5u);
      auto conflicts = NodeNamed(args[2]).store->ListConflicts();
      ASSERT_TRUE(conflicts.ok());
      std::string field = args[4].substr(0, args[4].find('='));
      std::string wanted = field + std::string(1, '\0') + args[4].substr(args[4].find('=') + 1);
      bool found = false;
      for (const ConflictRecord& record : *conflicts) {
        found = found || (record.item == ItemNamed(args[3]) && record.loser_data == wanted);
      }
      EXPECT_TRUE(found) << "no conflict at " << args[2] << " preserving " << args[4];
    } else if (what == "last") {  // expect last a-to-b created=1 ...
      ASSERT_GE(args.size(), 3u);
      const DirectionReport& report = args[2] == "a-to-b" ? last_.a_to_b : last_.b_to_a;
      for (auto& [name, value] : Options(args, 3)) {
        std::map<std::string, uint64_t> fields = {
            {"created", report.created},   {"updated", report.updated},
            {"deleted", report.deleted},   {"conflicts", report.conflicts},
            {"deferred", report.deferred}, {"skipped", report.skipped},
            {"recovery", report.recovery}, {"errors", report.errors.size()},
            {"batches", report.batches}};
        ASSERT_TRUE(fields.count(name)) << "unknown report field " << name;
        EXPECT_EQ(fields[name], std::stoull(value)) << name;
      }
    } else {  // expect A x absent | expect A x field=value...
      ASSERT_GE(args.size(), 3u);
      const Record* record = NodeNamed(what).provider.Get(ItemNamed(args[2]));
      if (args.size() == 4 && args[3] == "absent") {
        EXPECT_EQ(record, nullptr) << args[2] << " should be absent at " << what;
        return;
      }
      ASSERT_NE(record, nullptr) << args[2] << " missing at " << what;
      Record expected;
      for (auto& [name, value] : Options(args, 3)) expected[name] = value;
      EXPECT_EQ(*record, expected);
    }
  }

  void Execute(const std::vector<std::string>& args) {
    const std::string& command = args[0];
    if (command == "replicas") {
      AddReplicas(args);
    } else if (command == "put") {
      ASSERT_GE(args.size(), 4u);
      for (auto& [name, value] : Options(args, 3)) {
        NodeNamed(args[1]).provider.Put(ItemNamed(args[2]), name, value);
      }
    } else if (command == "erase") {
      ASSERT_EQ(args.size(), 3u);
      NodeNamed(args[1]).provider.Erase(ItemNamed(args[2]));
    } else if (command == "advance") {
      ASSERT_EQ(args.size(), 3u);
      NodeNamed(args[1]).clock.Advance(std::stoull(args[2]));
    } else if (command == "sync") {
      Sync(args);
    } else if (command == "detect") {
      ASSERT_TRUE(NodeNamed(args[1]).replica->DetectChanges().ok());
    } else if (command == "forget") {
      Node& node = NodeNamed(args[1]);
      auto forgotten = node.replica->ForgetTombstones(node.clock.NowMillis() + 1);
      ASSERT_TRUE(forgotten.ok());
      if (args.size() == 3) {
        EXPECT_EQ(*forgotten, std::stoul(args[2])) << "tombstones forgotten";
      }
    } else if (command == "filter") {
      ASSERT_EQ(args.size(), 3u);
      auto options = Options(args, 2);
      auto [field, value] = *options.begin();
      NodeNamed(args[1]).provider.SetFilter([field, value](const Record& record) {
        auto it = record.find(field);
        return it != record.end() && it->second == value;
      });
    } else if (command == "fail") {
      ASSERT_EQ(args.size(), 3u);
      NodeNamed(args[1]).provider.FailSavesOf({ItemNamed(args[2])});
    } else if (command == "heal") {
      NodeNamed(args[1]).provider.FailSavesOf({});
    } else if (command == "crash") {
      auto options = Options(args, 2);
      NodeNamed(args[1]).store->FailCommitAfter(options.count("after") ? std::stoi(options["after"])
                                                                       : 0);
    } else if (command == "expect") {
      Expect(args);
    } else {
      FAIL() << "unknown command " << command;
    }
  }

  fs::path file_;
  int line_number_ = 0;
  std::string temp_dir_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;
  SyncReport last_;
};

std::vector<std::string> ScenarioFiles() {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(MESHSYNC_SCENARIO_DIR)) {
    if (entry.path().extension() == ".scenario") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

class ScenarioTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScenarioTest, Runs) { Scenario(GetParam()).Run(); }

INSTANTIATE_TEST_SUITE_P(Scenarios, ScenarioTest, ::testing::ValuesIn(ScenarioFiles()),
                         [](const auto& param_info) {
                           std::string name = fs::path(param_info.param).stem().string();
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace meshsync
