// Helpers shared by the CLI's commands: how errors are reported, and JSON.
#ifndef MESHSYNC_APPS_MESHSYNC_CLI_UTIL_H_
#define MESHSYNC_APPS_MESHSYNC_CLI_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "meshsync/status.h"

namespace meshsync::cli {

// Prints "meshsync: MESSAGE (try 'meshsync help')"; returns the usage exit code 2.
int Usage(const char* message);
// Prints "meshsync: MESSAGE"; returns 1.
int Fail(const Status& status);
// A JSON string literal: valid UTF-8 passes through, other bytes become \u00XX.
std::string Json(std::string_view s);
// "YYYY-MM-DD HH:MM:SS UTC" for milliseconds since the epoch.
std::string Stamp(uint64_t millis);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_CLI_UTIL_H_
