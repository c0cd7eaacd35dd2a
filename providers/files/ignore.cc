#include "files/ignore.h"

#include <cstdint>
#include <vector>

namespace meshsync::files {
namespace {

// Matches a '[...]' class at pattern[p] against c; sets `end` past it.
// Returns false (and end = p) if the class is not closed.
bool MatchClass(std::string_view pattern, size_t p, char c, size_t& end, bool& matched) {
  size_t i = p + 1;
  bool negate = i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^');
  if (negate) ++i;
  bool first = true;
  matched = false;
  while (i < pattern.size() && (first || pattern[i] != ']')) {
    first = false;
    char lo = pattern[i];
    if (lo == '\\' && i + 1 < pattern.size()) lo = pattern[++i];
    char hi = lo;
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
      hi = pattern[i + 2];
      i += 2;
    }
    if (c >= lo && c <= hi) matched = true;
    ++i;
  }
  if (i >= pattern.size()) return false;
  end = i + 1;
  matched = matched != negate;
  return true;
}

// Whether pat[p..] matches text[t..]. Each (p, t) is decided once (memo),
// and a star either ends or eats one more character, so matching costs at
// most O(|pattern| x |text|) whatever the pattern: a hostile ignore file
// cannot make a scan hang.
class Matcher {
 public:
  Matcher(std::string_view pat, std::string_view text)
      : pat_(pat), text_(text), memo_((pat.size() + 1) * (text.size() + 1), 0) {}

  bool Match(size_t p, size_t t) {
    uint8_t& known = memo_[p * (text_.size() + 1) + t];
    if (known != 0) return known == 1;
    bool result = Decide(p, t);
    known = result ? 1 : 2;
    return result;
  }

 private:
  bool Decide(size_t p, size_t t) {
    if (p == pat_.size()) return t == text_.size();
    char pc = pat_[p];
    if (pc == '*') {
      if (p + 1 < pat_.size() && pat_[p + 1] == '*') {
        // "**/" also matches zero directories.
        if (p + 2 < pat_.size() && pat_[p + 2] == '/' && Match(p + 3, t)) return true;
        return Match(p + 2, t) || (t < text_.size() && Match(p, t + 1));
      }
      return Match(p + 1, t) || (t < text_.size() && text_[t] != '/' && Match(p, t + 1));
    }
    if (t >= text_.size()) return false;
    if (pc == '?') return text_[t] != '/' && Match(p + 1, t + 1);
    if (pc == '[') {
      size_t end = p;
      bool matched = false;
      if (MatchClass(pat_, p, text_[t], end, matched)) {
        return matched && text_[t] != '/' && Match(end, t + 1);
      }
      return text_[t] == '[' && Match(p + 1, t + 1);
    }
    if (pc == '\\' && p + 1 < pat_.size()) return text_[t] == pat_[p + 1] && Match(p + 2, t + 1);
    return text_[t] == pc && Match(p + 1, t + 1);
  }

  std::string_view pat_;
  std::string_view text_;
  std::vector<uint8_t> memo_;  // 0 unknown, 1 match, 2 no match
};

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Plain names (the common case) need no table.
  if (pattern.find_first_of("*?[\\") == std::string_view::npos) return pattern == text;
  return Matcher(pattern, text).Match(0, 0);
}

Status IgnoreRules::Add(std::string_view text, std::string_view origin) {
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Trailing spaces are dropped unless escaped.
    while (!line.empty() && line.back() == ' ' &&
           !(line.size() >= 2 && line[line.size() - 2] == '\\')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line[0] == '#') continue;
    Rule rule;
    if (line[0] == '!') {
      rule.negate = true;
      line.remove_prefix(1);
    } else if (line.size() >= 2 && line[0] == '\\' && (line[1] == '!' || line[1] == '#')) {
      line.remove_prefix(1);
    }
    if (!line.empty() && line.back() == '/') {
      rule.dir_only = true;
      line.remove_suffix(1);
    }
    if (!line.empty() && line[0] == '/') {
      rule.anchored = true;
      line.remove_prefix(1);
    }
    if (line.find('/') != std::string_view::npos) rule.anchored = true;
    if (line.size() > 1024) {
      return InvalidArgumentError(std::string(origin) + " line " + std::to_string(line_no) +
                                  ": pattern longer than 1024 bytes");
    }
    if (line.empty()) {
      return InvalidArgumentError(std::string(origin) + " line " + std::to_string(line_no) +
                                  ": empty pattern");
    }
    if (line.find('\0') != std::string_view::npos) {
      return InvalidArgumentError(std::string(origin) + " line " + std::to_string(line_no) +
                                  ": NUL in pattern");
    }
    rule.pattern = std::string(line);
    rules_.push_back(std::move(rule));
  }
  return Status::Ok();
}

bool IgnoreRules::Ignored(std::string_view path, bool is_dir) const {
  size_t slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  for (auto it = rules_.rbegin(); it != rules_.rend(); ++it) {
    const Rule& rule = *it;
    if (rule.dir_only && !is_dir) continue;
    bool hit = rule.anchored ? GlobMatch(rule.pattern, path) : GlobMatch(rule.pattern, name);
    if (hit) return !rule.negate;
  }
  return false;
}

}  // namespace meshsync::files
