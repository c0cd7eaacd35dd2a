// A temporary directory of a test's own: made under the system's temporary
// directory when constructed, removed with everything in it when destroyed.
// An empty path() means it could not be made; tests assert on that.
#ifndef MESHSYNC_TESTING_SCRATCH_DIR_H_
#define MESHSYNC_TESTING_SCRATCH_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace meshsync::testing {

class ScratchDir {
 public:
  // `name` goes into the directory's name, to tell whose it is.
  explicit ScratchDir(std::string_view name) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / ("meshsync-" + std::string(name) + "-XXXXXX"))
            .string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace meshsync::testing

#endif  // MESHSYNC_TESTING_SCRATCH_DIR_H_
