// meshsync: the command-line entry point.
#include <cstdio>
#include <string>
#include <vector>

#include "demo.h"

namespace {

constexpr const char* kUsage =
    "usage: meshsync <command> [options]\n"
    "\n"
    "commands:\n"
    "  demo [--dir DIR] [--quiet]   sync three replicas of a contact list (laptop, phone,\n"
    "                               hub) with offline edits and conflicts; metadata in\n"
    "                               SQLite under DIR (default: a new temporary folder)\n"
    "  version                      print the version\n"
    "  help                         print this help\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "demo") return meshsync::cli::RunDemo(args);
  if (command == "version" || command == "--version") {
    std::puts("meshsync 0.1.0");
    return 0;
  }
  std::fprintf(stderr, "meshsync: unknown command '%s' (try 'meshsync help')\n", command.c_str());
  return 2;
}
