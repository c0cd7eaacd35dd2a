// Ignore rules in gitignore syntax, from --ignore options and the folder's
// .meshsyncignore file.
//
// Supported: blank lines and '#' comments; '!' negation (the last matching
// rule wins); a trailing '/' matches directories only; a pattern with a '/'
// other than a trailing one is anchored at the folder root, one without
// matches a name at any depth; '*' and '?' do not match '/', '**' matches
// any number of directories, '[...]' character classes, '\' escapes.
// A directory that is ignored is not descended into, so files under it
// cannot be re-included (as in git).
#ifndef MESHSYNC_PROVIDERS_FILES_IGNORE_H_
#define MESHSYNC_PROVIDERS_FILES_IGNORE_H_

#include <string>
#include <string_view>
#include <vector>

#include "meshsync/status.h"

namespace meshsync::files {

class IgnoreRules {
 public:
  // Adds the rules in `text` (one per line). `origin` names the source in
  // errors ("--ignore", ".meshsyncignore").
  Status Add(std::string_view text, std::string_view origin);

  // Whether `path` (relative to the root, '/'-separated) is ignored.
  bool Ignored(std::string_view path, bool is_dir) const;
  bool empty() const { return rules_.empty(); }

 private:
  struct Rule {
    std::string pattern;
    bool negate = false;
    bool dir_only = false;
    bool anchored = false;
  };
  std::vector<Rule> rules_;
};

// fnmatch-style glob matching with '**'; exposed for tests.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_IGNORE_H_
