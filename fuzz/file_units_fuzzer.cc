// Fuzzes what a folder replica accepts from a peer or from its own metadata:
// content units, stored file state, placements (names), and ignore rules.
// Decoders must reject bad bytes cleanly; what they accept must re-encode
// to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "files/file_provider.h"
#include "files/ignore.h"

using namespace meshsync;
using namespace meshsync::files;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: {
      auto content = DecodeContent(input);
      if (content.ok() && EncodeContent(*content) != input) std::abort();
      break;
    }
    case 1: {
      auto state = DecodeState(input);
      if (state.ok() && EncodeState(*state) != input) std::abort();
      break;
    }
    case 2: {
      ItemId parent;
      std::string name;
      if (DecodePlacement(input, parent, name).ok()) {
        if (!ValidName(name) || EncodePlacement(parent, name) != input) std::abort();
        if (name.find('/') != std::string::npos) std::abort();
      }
      break;
    }
    case 3: {
      IgnoreRules rules;
      size_t split = input.find('\n');
      std::string_view path = split == std::string_view::npos ? input : input.substr(0, split);
      if (rules.Add(input, "fuzz").ok()) {
        rules.Ignored(path, false);
        rules.Ignored(path, true);
      }
      break;
    }
  }
  return 0;
}
