#include "files/ignore.h"

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

bool Match(std::string_view pat, size_t p, std::string_view text, size_t t) {
  while (p < pat.size()) {
    char pc = pat[p];
    if (pc == '*') {
      bool globstar = p + 1 < pat.size() && pat[p + 1] == '*';
      if (globstar) {
        size_t next = p + 2;
        // "**/" also matches zero directories.
        if (next < pat.size() && pat[next] == '/') {
          if (Match(pat, next + 1, text, t)) return true;
        }
        for (size_t k = t; k <= text.size(); ++k) {
          if (Match(pat, next, text, k)) return true;
        }
        return false;
      }
      for (size_t k = t; k <= text.size(); ++k) {
        if (Match(pat, p + 1, text, k)) return true;
        if (k < text.size() && text[k] == '/') return false;
      }
      return false;
    }
    if (t >= text.size()) return false;
    if (pc == '?') {
      if (text[t] == '/') return false;
    } else if (pc == '[') {
      size_t end = p;
      bool matched = false;
      if (MatchClass(pat, p, text[t], end, matched)) {
        if (!matched || text[t] == '/') return false;
        p = end;
        ++t;
        continue;
      }
      if (text[t] != '[') return false;
    } else {
      if (pc == '\\' && p + 1 < pat.size()) pc = pat[++p];
      if (text[t] != pc) return false;
    }
    ++p;
    ++t;
  }
  return t == text.size();
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view text) {
  return Match(pattern, 0, text, 0);
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
