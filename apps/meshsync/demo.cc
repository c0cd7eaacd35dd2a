#include "demo.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "memory/record_provider.h"
#include "meshsync/sync.h"

namespace meshsync::cli {
namespace {

namespace fs = std::filesystem;

struct Device {
  std::string name;
  RecordProvider contacts;
  std::unique_ptr<MetadataStore> store;
  std::unique_ptr<Replica> replica;
};

class Demo {
 public:
  Demo(fs::path dir, bool quiet) : dir_(std::move(dir)), quiet_(quiet) {}

  int Run() {
    if (Status status = Open(); !status.ok()) return Fail(status);
    Device& laptop = *devices_[0];
    Device& phone = *devices_[1];
    Device& hub = *devices_[2];

    Say("== Day 1: the laptop creates three contacts; everyone syncs through the hub\n");
    ItemId ada = NewContact(laptop, {{"name", "Ada Lovelace"}, {"email", "ada@example.org"}});
    ItemId grace = NewContact(laptop, {{"name", "Grace Hopper"}, {"title", "Rear Admiral"}});
    ItemId alan = NewContact(laptop, {{"name", "Alan Turing"}});
    if (!Sync(laptop, hub) || !Sync(hub, phone)) return 1;

    Say("\n== Day 2: both devices are offline and edit the same contacts\n");
    phone.contacts.Put(ada, "phone", "+44 20 7946 0000");
    Say("  phone : Ada.phone = +44 20 7946 0000\n");
    laptop.contacts.Put(ada, "email", "ada@analytical.engine");
    Say("  laptop: Ada.email = ada@analytical.engine   (a different field: merges)\n");
    laptop.contacts.Put(grace, "title", "Commodore");
    Say("  laptop: Grace.title = Commodore\n");
    phone.contacts.Put(grace, "title", "Admiral");
    Say("  phone : Grace.title = Admiral                (the same field: a conflict)\n");
    laptop.contacts.Erase(alan);
    Say("  laptop: deletes Alan\n");
    phone.contacts.Put(alan, "note", "met at Bletchley");
    Say("  phone : Alan.note = met at Bletchley          (an edit beats a concurrent delete)\n");

    Say("\n== Day 3: back online\n");
    if (!Sync(laptop, hub) || !Sync(hub, phone) || !Sync(laptop, hub)) return 1;

    Say("\n== Result\n");
    bool converged = true;
    for (const auto& device : devices_) {
      Say("  " + device->name + ":\n");
      for (const auto& [id, record] : device->contacts.records()) {
        std::string line = "    ";
        for (const auto& [field, value] : record) line += field + "=" + value + "  ";
        Say(line + "\n");
      }
      converged = converged && device->contacts.records() == laptop.contacts.records();
    }
    for (const auto& device : devices_) {
      auto conflicts = device->store->ListConflicts();
      if (!conflicts.ok()) return Fail(conflicts.status());
      for (const ConflictRecord& conflict : *conflicts) {
        std::string loser = conflict.loser_data;
        std::replace(loser.begin(), loser.end(), '\0', '=');
        Say("  conflict kept at " + device->name + ": " +
            std::string(ConflictKindName(conflict.kind)) +
            (conflict.loser_is_delete ? " (the deletion lost)" : ", losing value " + loser) + "\n");
      }
    }
    for (const auto& device : devices_) {
      const ReplicaState& state = device->replica->state();
      Say("  " + device->name + " (" + state.id.ShortName() + ") knowledge " +
          std::to_string(state.knowledge.Encode(state.keys).size()) +
          " bytes: " + state.knowledge.ToString() + "\n");
    }
    Say("  metadata: " + dir_.string() + "/<device>.db (SQLite)\n");
    if (!converged) {
      std::fprintf(stderr, "meshsync demo: replicas did not converge\n");
      return 1;
    }
    std::printf("demo: 3 replicas converged after 5 sessions\n");
    return 0;
  }

 private:
  Status Open() {
    std::error_code error;
    fs::create_directories(dir_, error);
    if (error) return UnavailableError("cannot create " + dir_.string() + ": " + error.message());
    for (const char* name : {"laptop", "phone", "hub"}) {
      auto device = std::make_unique<Device>();
      device->name = name;
      auto store = OpenSqliteStore((dir_ / (std::string(name) + ".db")).string(),
                                   RecordProvider::kName, SystemRandom());
      if (!store.ok()) return store.status();
      device->store = std::move(*store);
      auto replica = Replica::Open(*device->store, device->contacts);
      if (!replica.ok()) return replica.status();
      device->replica = std::move(*replica);
      devices_.push_back(std::move(device));
    }
    return Status::Ok();
  }

  ItemId NewContact(Device& device, const Record& fields) {
    ItemId id = ItemId::Generate(SystemClock(), SystemRandom());
    for (const auto& [field, value] : fields) device.contacts.Put(id, field, value);
    Say("  " + device.name + ": new contact " + fields.at("name") + "\n");
    return id;
  }

  bool Sync(Device& a, Device& b) {
    auto report = Synchronize(*a.replica, *b.replica);
    if (!report.ok()) {
      Fail(report.status());
      return false;
    }
    auto describe = [](const DirectionReport& r) {
      return std::to_string(r.created) + " created, " + std::to_string(r.updated) + " updated, " +
             std::to_string(r.deleted) + " deleted, " + std::to_string(r.conflicts) + " conflicts";
    };
    Say("  sync " + a.name + " -> " + b.name + ": " + describe(report->a_to_b) + "; " + b.name +
        " -> " + a.name + ": " + describe(report->b_to_a) + "\n");
    return true;
  }

  int Fail(const Status& status) {
    std::fprintf(stderr, "meshsync demo: %s\n", status.ToString().c_str());
    return 1;
  }

  void Say(const std::string& text) {
    if (!quiet_) std::fputs(text.c_str(), stdout);
  }

  fs::path dir_;
  bool quiet_;
  std::vector<std::unique_ptr<Device>> devices_;
};

}  // namespace

int RunDemo(const std::vector<std::string>& args) {
  std::string dir;
  bool quiet = false;
  for (size_t idx = 0; idx < args.size(); ++idx) {
    if (args[idx] == "--dir" && idx + 1 < args.size()) {
      dir = args[++idx];
    } else if (args[idx] == "--quiet") {
      quiet = true;
    } else {
      std::fprintf(stderr, "meshsync demo: unexpected argument '%s'\n", args[idx].c_str());
      return 2;
    }
  }
  if (dir.empty()) {
    std::string pattern = (fs::temp_directory_path() / "meshsync-demo-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::fprintf(stderr, "meshsync demo: cannot create a temporary folder\n");
      return 1;
    }
    dir = pattern;
  } else if (fs::exists(fs::path(dir) / "laptop.db")) {
    std::fprintf(stderr, "meshsync demo: %s already holds a demo; give an empty folder\n",
                 dir.c_str());
    return 2;
  }
  return Demo(dir, quiet).Run();
}

}  // namespace meshsync::cli
