#include "sql/value.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

namespace meshsync::sql {

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kInteger:
      return "integer";
    case Kind::kReal:
      return "real";
    case Kind::kNumeric:
      return "numeric";
    case Kind::kText:
      return "text";
    case Kind::kBlob:
      return "blob";
    case Kind::kBoolean:
      return "boolean";
    case Kind::kDate:
      return "date";
    case Kind::kTimestamp:
      return "timestamp";
    case Kind::kTimestampTz:
      return "timestamptz";
    case Kind::kUuid:
      return "uuid";
    case Kind::kJson:
      return "json";
    case Kind::kJsonb:
      return "jsonb";
  }
  return "?";
}

std::optional<Kind> KindOfSqliteType(std::string_view declared) {
  std::string word = Lower(declared);
  if (size_t paren = word.find('('); paren != std::string::npos) word.resize(paren);
  while (!word.empty() && word.back() == ' ') word.pop_back();
  while (!word.empty() && word.front() == ' ') word.erase(0, 1);
  static const std::array<std::pair<std::string_view, Kind>, 27> kWords = {{
      {"integer", Kind::kInteger},
      {"int", Kind::kInteger},
      {"bigint", Kind::kInteger},
      {"smallint", Kind::kInteger},
      {"tinyint", Kind::kInteger},
      {"mediumint", Kind::kInteger},
      {"real", Kind::kReal},
      {"double", Kind::kReal},
      {"double precision", Kind::kReal},
      {"float", Kind::kReal},
      {"numeric", Kind::kNumeric},
      {"decimal", Kind::kNumeric},
      {"text", Kind::kText},
      {"varchar", Kind::kText},
      {"character varying", Kind::kText},
      {"char", Kind::kText},
      {"clob", Kind::kText},
      {"blob", Kind::kBlob},
      {"bytea", Kind::kBlob},
      {"boolean", Kind::kBoolean},
      {"bool", Kind::kBoolean},
      {"date", Kind::kDate},
      {"timestamp", Kind::kTimestamp},
      {"datetime", Kind::kTimestamp},
      {"timestamptz", Kind::kTimestampTz},
      {"uuid", Kind::kUuid},
      {"json", Kind::kJson},
  }};
  if (word == "jsonb") return Kind::kJsonb;
  for (const auto& [name, kind] : kWords) {
    if (word == name) return kind;
  }
  return std::nullopt;
}

Affinity SqliteAffinity(std::string_view declared) {
  std::string lower = Lower(declared);
  auto has = [&lower](std::string_view word) { return lower.find(word) != std::string::npos; };
  if (has("int")) return Affinity::kInteger;
  if (has("char") || has("clob") || has("text")) return Affinity::kText;
  if (has("blob") || lower.empty()) return Affinity::kBlob;
  if (has("real") || has("floa") || has("doub")) return Affinity::kReal;
  return Affinity::kNumeric;
}

std::optional<Kind> KindOfPostgresType(std::string_view typname) {
  static const std::array<std::pair<std::string_view, Kind>, 17> kTypes = {{
      {"int2", Kind::kInteger},
      {"int4", Kind::kInteger},
      {"int8", Kind::kInteger},
      {"float4", Kind::kReal},
      {"float8", Kind::kReal},
      {"numeric", Kind::kNumeric},
      {"text", Kind::kText},
      {"varchar", Kind::kText},
      {"bpchar", Kind::kText},
      {"bytea", Kind::kBlob},
      {"bool", Kind::kBoolean},
      {"date", Kind::kDate},
      {"timestamp", Kind::kTimestamp},
      {"timestamptz", Kind::kTimestampTz},
      {"uuid", Kind::kUuid},
      {"json", Kind::kJson},
      {"jsonb", Kind::kJsonb},
  }};
  for (const auto& [name, kind] : kTypes) {
    if (typname == name) return kind;
  }
  return std::nullopt;
}

std::string FormatReal(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::array<char, 64> buf;
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), d);
  if (ec != std::errc()) return "nan";
  return std::string(buf.data(), end);
}

std::optional<double> ParseReal(std::string_view text) {
  std::string lower = Lower(text);
  if (lower == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (lower == "inf" || lower == "infinity" || lower == "+inf" || lower == "+infinity")
    return std::numeric_limits<double>::infinity();
  if (lower == "-inf" || lower == "-infinity") return -std::numeric_limits<double>::infinity();
  std::string_view t = text;
  if (!t.empty() && t[0] == '+') t.remove_prefix(1);
  double d = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), d);
  if (ec != std::errc() || end != t.data() + t.size() || t.empty()) return std::nullopt;
  return d;
}

std::optional<int64_t> ParseInteger(std::string_view text) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return n;
}

}  // namespace meshsync::sql
