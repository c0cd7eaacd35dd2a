#include "cli_util.h"

#include <cstdio>
#include <ctime>

#include "node/json.h"

namespace meshsync::cli {

int Usage(const char* message) {
  std::fprintf(stderr, "meshsync: %s (try 'meshsync help')\n", message);
  return 2;
}

int Fail(const Status& status) {
  std::fprintf(stderr, "meshsync: %s\n", std::string(status.message()).c_str());
  return 1;
}

std::string Json(std::string_view s) { return node::JsonString(s); }

std::string Stamp(uint64_t millis) {
  time_t seconds = static_cast<time_t>(millis / 1000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace meshsync::cli
