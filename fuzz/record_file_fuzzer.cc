// Record files (providers/records) are written by people and by other
// tools: any bytes either parse or are refused with a line number, and
// whatever parses formats back to text that parses to the same fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "records/record_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto fields = meshsync::ParseRecordFile(text);
  if (!fields.ok()) return 0;
  auto formatted = meshsync::FormatRecordFile(*fields);
  if (!formatted.ok()) std::abort();  // what was read can be written
  auto again = meshsync::ParseRecordFile(*formatted);
  if (!again.ok() || *again != *fields) std::abort();
  return 0;
}
