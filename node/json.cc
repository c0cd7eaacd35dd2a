#include "node/json.h"

#include <cstdio>

namespace meshsync::node {

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
      continue;
    }
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool valid = len > 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    if (!valid) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
      continue;
    }
    out.append(s.substr(i, len));
    i += len;
  }
  return out + "\"";
}

namespace {

void SkipSpace(std::string_view json, size_t& i) {
  while (i < json.size() &&
         (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r'))
    ++i;
}

void AppendUtf8(uint32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Reads the string literal at json[i] (the opening quote).
Result<std::string> ReadString(std::string_view json, size_t& i) {
  auto bad = [] { return InvalidArgumentError("the request body is not valid JSON"); };
  if (i >= json.size() || json[i] != '"') return bad();
  std::string out;
  auto hex4 = [&](size_t at, uint32_t& value) {
    if (at + 4 > json.size()) return false;
    value = 0;
    for (size_t k = at; k < at + 4; ++k) {
      char c = json[k];
      int digit = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
      if (digit < 0) return false;
      value = value * 16 + static_cast<uint32_t>(digit);
    }
    return true;
  };
  for (++i; i < json.size(); ++i) {
    char c = json[i];
    if (c == '"') {
      ++i;
      return out;
    }
    if (static_cast<unsigned char>(c) < 0x20) return bad();
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (++i >= json.size()) return bad();
    switch (json[i]) {
      case '"':
        out.push_back('"');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '/':
        out.push_back('/');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        uint32_t code = 0;
        if (!hex4(i + 1, code)) return bad();
        i += 4;
        if (code >= 0xD800 && code < 0xDC00) {
          uint32_t low = 0;
          if (i + 2 >= json.size() || json[i + 1] != '\\' || json[i + 2] != 'u' ||
              !hex4(i + 3, low) || low < 0xDC00 || low >= 0xE000) {
            return bad();
          }
          i += 6;
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
        } else if (code >= 0xDC00 && code < 0xE000) {
          return bad();
        }
        AppendUtf8(code, out);
        break;
      }
      default:
        return bad();
    }
  }
  return bad();
}

}  // namespace

Result<std::string> JsonStringField(std::string_view json, std::string_view field) {
  size_t i = 0;
  SkipSpace(json, i);
  if (i >= json.size() || json[i] != '{') {
    return InvalidArgumentError("the request body must be a JSON object");
  }
  ++i;
  while (true) {
    SkipSpace(json, i);
    MESHSYNC_ASSIGN_OR_RETURN(std::string key, ReadString(json, i));
    SkipSpace(json, i);
    if (i >= json.size() || json[i] != ':')
      return InvalidArgumentError("the request body is not valid JSON");
    ++i;
    SkipSpace(json, i);
    if (key == field) {
      if (i >= json.size() || json[i] != '"') {
        return InvalidArgumentError("\"" + std::string(field) + "\" must be a string");
      }
      return ReadString(json, i);
    }
    // Another field: only strings are expected in these bodies.
    MESHSYNC_ASSIGN_OR_RETURN(std::string ignored, ReadString(json, i));
    SkipSpace(json, i);
    if (i < json.size() && json[i] == ',') {
      ++i;
      continue;
    }
    return InvalidArgumentError("the request body has no \"" + std::string(field) + "\"");
  }
}

}  // namespace meshsync::node
