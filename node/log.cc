#include "node/log.h"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>

namespace meshsync::node {

void Log(std::string_view message) {
  static std::mutex mu;
  auto now = std::chrono::system_clock::now();
  auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t seconds = static_cast<time_t>(millis / 1000);
  struct tm utc;
  gmtime_r(&seconds, &utc);
  char stamp[80];  // room for any int the format may see (-Wformat-truncation at -O3)
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(millis % 1000));
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s %.*s\n", stamp, static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

}  // namespace meshsync::node
