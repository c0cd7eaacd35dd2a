#include "feed/xml.h"

#include <expat.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <memory>

namespace meshsync::xml {
namespace {

constexpr char kSeparator = '\x01';  // cannot occur in XML text, so not in a name
constexpr std::string_view kXmlNamespace = "http://www.w3.org/XML/1998/namespace";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool IsWhitespace(std::string_view text) { return std::all_of(text.begin(), text.end(), IsSpace); }

std::string_view TrimSpace(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

// Whether a document's bytes are UTF-8 as far as its start tells: no
// UTF-16 or UTF-32 byte order mark or zero byte where a '<' would be.
bool LooksUtf8(std::string_view document) {
  if (document.size() < 2) return true;
  auto b0 = static_cast<uint8_t>(document[0]), b1 = static_cast<uint8_t>(document[1]);
  return !((b0 == 0xFE && b1 == 0xFF) || (b0 == 0xFF && b1 == 0xFE) || b0 == 0 || b1 == 0);
}

bool IsUtf8Name(std::string_view encoding) {
  auto equal = [&](std::string_view name) {
    return encoding.size() == name.size() &&
           std::equal(encoding.begin(), encoding.end(), name.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == b;
           });
  };
  return equal("utf-8") || equal("us-ascii");
}

// The prefix of expat's "uri SEP local SEP prefix" triplet: "" when the
// name has none (in the default namespace, or in none).
std::string_view PrefixOf(std::string_view raw) {
  size_t first = raw.find(kSeparator);
  if (first == std::string_view::npos) return {};
  size_t second = raw.find(kSeparator, first + 1);
  return second == std::string_view::npos ? std::string_view() : raw.substr(second + 1);
}

// Whether a triplet names an attribute in a namespace (which needs a prefix).
bool HasNamespace(std::string_view raw) { return raw.find(kSeparator) != std::string_view::npos; }

// The namespaces of one document, each held once.
class UriTable {
 public:
  Uri Get(std::string_view uri) {
    for (const Uri& known : uris_) {
      if (known == uri) return known;
    }
    if (uris_.size() >= kMaxShared) return Uri(uri);  // a hostile document: not held here
    return uris_.emplace_back(uri);
  }

 private:
  static constexpr size_t kMaxShared = 16;
  std::vector<Uri> uris_;
};

// Splits expat's "uri SEP local SEP prefix" triplet.
Name SplitName(const char* raw, UriTable& uris) {
  Name name;
  std::string_view rest(raw);
  size_t first = rest.find(kSeparator);
  if (first == std::string_view::npos) {
    name.local = std::string(rest);
    return name;
  }
  name.uri = uris.Get(rest.substr(0, first));
  rest.remove_prefix(first + 1);
  size_t second = rest.find(kSeparator);
  name.local = std::string(rest.substr(0, second));
  if (second != std::string_view::npos) name.prefix = std::string(rest.substr(second + 1));
  return name;
}

class Parser {
  // An open element. Its children so far wait in pending_ (from
  // children_mark on), and become its children, in a vector of exactly
  // their number, when it ends: a document's many small elements cost one
  // allocation each for their children, with no spare capacity.
  struct Frame {
    Element element;
    size_t children_mark = 0;  // where this element's children in pending_ start
    size_t held_mark = 0;      // where this element's entries in held_ start
    bool has_element = false;
    bool mixed = false;  // holds text other than whitespace
    // Content kept as source (SourcePolicy): what is kept so far, and where
    // the piece being read started.
    std::shared_ptr<Source> source;
    size_t piece_start = 0;
    // The prefixes the kept content's names use (bound outside it, or in it).
    std::vector<std::string> used;
  };

 public:
  // With `policy`, `document` (held by `owner`) is the whole input, and
  // Feed gets it whole.
  Parser(const Limits& limits, const ElementSink& sink, const SourcePolicy* policy = nullptr,
         std::shared_ptr<const char[]> owner = nullptr, std::string_view document = {})
      : limits_(limits), sink_(sink), owner_(std::move(owner)), document_(document) {
    if (policy != nullptr && policy->keep && owner_ != nullptr && LooksUtf8(document_)) {
      policy_ = policy;
      built_prefix_ = policy->built_uri + kSeparator + policy->built_local;
    }
    parser_ = XML_ParserCreateNS(nullptr, kSeparator);
    XML_SetReturnNSTriplet(parser_, 1);
    XML_SetUserData(parser_, this);
    XML_SetElementHandler(parser_, &Parser::OnStart, &Parser::OnEnd);
    XML_SetCharacterDataHandler(parser_, &Parser::OnText);
    XML_SetStartNamespaceDeclHandler(parser_, &Parser::OnNamespace);
    XML_SetStartDoctypeDeclHandler(parser_, &Parser::OnDoctype);
    XML_SetEntityDeclHandler(parser_, &Parser::OnEntity);
    XML_SetParamEntityParsing(parser_, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetXmlDeclHandler(parser_, &Parser::OnXmlDeclaration);
  }
  ~Parser() { XML_ParserFree(parser_); }
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  Status Feed(std::string_view bytes, bool last) {
    received_ += bytes.size();
    if (received_ > limits_.max_bytes) {
      return InvalidArgumentError("XML document is larger than the limit of " +
                                  std::to_string(limits_.max_bytes) + " bytes");
    }
    // expat copies what it is given into a buffer of its own first: in
    // pieces, that buffer stays small and is reused, rather than a second
    // copy of the whole document in fresh memory.
    constexpr size_t kPiece = 1 << 20;
    do {
      size_t n = std::min(bytes.size(), kPiece);
      bool final_piece = last && n == bytes.size();
      if (XML_Parse(parser_, bytes.data(), static_cast<int>(n), final_piece) != XML_STATUS_OK) {
        return Error();
      }
      bytes.remove_prefix(n);
    } while (!bytes.empty());
    return Status::Ok();
  }

  Result<Element> Finish() {
    if (!done_) return InvalidArgumentError("XML document has no root element");
    return std::move(root_);
  }

 private:
  Status Error() {
    std::string where = " at line " + std::to_string(XML_GetCurrentLineNumber(parser_)) +
                        ", column " + std::to_string(XML_GetCurrentColumnNumber(parser_) + 1);
    if (!refusal_.empty()) return InvalidArgumentError(refusal_ + where);
    return InvalidArgumentError(std::string("malformed XML: ") +
                                XML_ErrorString(XML_GetErrorCode(parser_)) + where);
  }

  void Refuse(std::string reason) {
    if (refusal_.empty()) refusal_ = std::move(reason);
    XML_StopParser(parser_, XML_FALSE);
  }

  // Where the current event starts in the document, and where it ends.
  size_t EventStart() const { return static_cast<size_t>(XML_GetCurrentByteIndex(parser_)); }
  size_t EventEnd() const {
    return EventStart() + static_cast<size_t>(XML_GetCurrentByteCount(parser_));
  }

  // Whether expat's name triplet `raw_name` is SourcePolicy::built.
  bool IsBuilt(std::string_view raw_name) const {
    return raw_name.starts_with(built_prefix_) && (raw_name.size() == built_prefix_.size() ||
                                                   raw_name[built_prefix_.size()] == kSeparator);
  }

  // Notes that kept content uses `prefix`.
  static void Use(Frame& frame, std::string_view prefix) {
    if (prefix == "xml") return;
    for (const std::string& known : frame.used) {
      if (known == prefix) return;
    }
    frame.used.emplace_back(prefix);
  }

  // The bindings `frame`'s kept content needs from outside: for each prefix
  // it uses, the binding in scope at `frame` (a prefix bound only inside the
  // content needs none; the default namespace, unbound, is bound to "").
  // Consecutive items that use the same prefixes under the same parent
  // share one copy.
  std::shared_ptr<const Bindings> ScopeOf(const Frame& frame) {
    if (last_scope_ != nullptr && frame.element.namespaces.empty() &&
        last_scope_generation_ == namespace_generation_ && last_used_ == frame.used) {
      return last_scope_;
    }
    Bindings bindings;
    for (const std::string& prefix : frame.used) {
      const std::string* uri = nullptr;
      for (size_t f = stack_.size(); f-- > 0 && uri == nullptr;) {
        const auto& declared = stack_[f].element.namespaces;
        for (size_t d = declared.size(); d-- > 0;) {
          if (declared[d].first == prefix) {
            uri = &declared[d].second;
            break;
          }
        }
      }
      if (uri != nullptr) {
        bindings.emplace_back(prefix, *uri);
      } else if (prefix.empty()) {
        bindings.emplace_back("", "");
      }
    }
    auto scope = std::make_shared<const Bindings>(std::move(bindings));
    if (frame.element.namespaces.empty()) {
      last_scope_ = scope;
      last_used_ = frame.used;
      last_scope_generation_ = namespace_generation_;
    }
    return scope;
  }

  static void OnStart(void* data, const XML_Char* raw_name, const XML_Char** attrs) {
    auto* self = static_cast<Parser*>(data);
    if (static_cast<int>(self->stack_.size() + self->skipped_) >= self->limits_.max_depth) {
      self->Refuse("XML nesting is deeper than the limit of " +
                   std::to_string(self->limits_.max_depth));
      ++self->skipped_;  // expat reports an empty element's end with its start
      return;
    }
    // Inside content kept as source, only the built children become nodes.
    if (self->skipped_ > 0 ||
        (!self->stack_.empty() && self->stack_.back().source && !self->IsBuilt(raw_name))) {
      self->pending_namespaces_.clear();
      if (self->refusal_.empty()) {  // else skipped because refused, not kept
        Frame& kept = self->stack_.back();
        if (self->skipped_ == 0) kept.has_element = true;
        Use(kept, PrefixOf(raw_name));
        for (size_t i = 0; attrs[i] != nullptr; i += 2) {
          if (HasNamespace(attrs[i])) Use(kept, PrefixOf(attrs[i]));
        }
      }
      ++self->skipped_;
      return;
    }
    if (!self->stack_.empty() && self->stack_.back().source) {
      Frame& parent = self->stack_.back();
      parent.source->pieces.push_back(self->Piece(parent.piece_start, self->EventStart()));
    }
    if (!self->pending_namespaces_.empty()) ++self->namespace_generation_;
    Frame frame;
    frame.children_mark = self->pending_.size();
    frame.held_mark = self->held_.size();
    Element& element = frame.element;
    element.name = SplitName(raw_name, self->uris_);
    element.namespaces = std::move(self->pending_namespaces_);
    self->pending_namespaces_.clear();
    self->namespaces_in_scope_ += element.namespaces.size();
    if (self->namespaces_in_scope_ > self->limits_.max_namespaces) {
      self->Refuse("XML element has more than " + std::to_string(self->limits_.max_namespaces) +
                   " namespaces in scope");
      ++self->skipped_;  // as above
      return;
    }
    size_t count = 0;
    while (attrs[count] != nullptr) count += 2;
    element.attributes.reserve(count / 2);
    for (size_t i = 0; i < count; i += 2) {
      element.attributes.push_back(Attribute{SplitName(attrs[i], self->uris_), attrs[i + 1]});
    }
    if (!self->stack_.empty()) self->stack_.back().has_element = true;
    const size_t depth = self->stack_.size();
    if (self->policy_ != nullptr && (depth == 1 || depth == 2) &&
        self->policy_->keep(element, self->stack_.back().element, self->stack_.front().element)) {
      frame.source = std::make_shared<Source>();
      frame.source->document = self->owner_;
      frame.piece_start = self->EventEnd();
    }
    self->stack_.push_back(std::move(frame));
  }

  std::string_view Piece(size_t from, size_t to) const { return document_.substr(from, to - from); }

  // The last piece of `frame`'s kept content ends where its end tag starts.
  void FinishSource(Frame& frame) {
    Source& source = *frame.source;
    source.scope = ScopeOf(frame);
    source.pieces.push_back(Piece(frame.piece_start, EventStart()));
    // As for nodes: whitespace without elements is text.
    source.element_only = !frame.mixed && frame.has_element;
    if (source.element_only) {
      for (std::string_view& piece : source.pieces) piece = TrimSpace(piece);
    }
    std::erase_if(source.pieces, [](std::string_view piece) { return piece.empty(); });
    frame.element.source = std::move(frame.source);
  }

  // Whitespace held back from an element that is neither mixed nor done
  // becomes text only if the element turns out to be mixed or text-only;
  // element-only content drops it (see the header).
  static void OnEnd(void* data, const XML_Char*) {
    auto* self = static_cast<Parser*>(data);
    if (self->skipped_ > 0) {
      --self->skipped_;
      return;
    }
    Frame& frame = self->stack_.back();
    if (frame.source) self->FinishSource(frame);
    if (!frame.mixed && !frame.has_element) self->Restore(frame);  // whitespace-only text
    self->held_.resize(frame.held_mark);
    auto& pending = self->pending_;
    const auto first = pending.begin() + static_cast<ptrdiff_t>(frame.children_mark);
    if (!frame.element.namespaces.empty()) ++self->namespace_generation_;
    self->namespaces_in_scope_ -= frame.element.namespaces.size();
    Element element = std::move(frame.element);
    element.children.reserve(static_cast<size_t>(pending.end() - first));
    std::move(first, pending.end(), std::back_inserter(element.children));
    pending.erase(first, pending.end());
    self->stack_.pop_back();
    const size_t depth = self->stack_.size();
    if (depth > 0 && self->stack_.back().source) self->stack_.back().piece_start = self->EventEnd();
    if (depth == 0) {
      self->root_ = std::move(element);
      self->done_ = true;
      return;
    }
    if (depth <= 2 && self->sink_ && self->refusal_.empty()) {
      Result<bool> taken =
          self->sink_(element, self->stack_.back().element, self->stack_.front().element);
      if (!taken.ok()) {
        self->Refuse(std::string(taken.status().message()));
      } else if (*taken) {
        element = Element{};
      }
    }
    pending.push_back(Node{std::move(element)});
  }

  static void OnText(void* data, const XML_Char* text, int length) {
    auto* self = static_cast<Parser*>(data);
    if (self->stack_.empty() || self->skipped_ > 0) return;
    Frame& frame = self->stack_.back();
    std::string_view piece(text, static_cast<size_t>(length));
    if (frame.source) {  // the text is in the source pieces
      if (!frame.mixed && !IsWhitespace(piece)) frame.mixed = true;
      return;
    }
    auto& pending = self->pending_;
    if (!frame.mixed) {
      if (IsWhitespace(piece)) {
        auto& held = self->held_;
        const size_t position = pending.size() - frame.children_mark;
        if (held.size() > frame.held_mark && held.back().first == position) {
          held.back().second.append(piece);
        } else {
          held.emplace_back(position, std::string(piece));
        }
        return;
      }
      self->Restore(frame);
      frame.mixed = true;
    }
    if (pending.size() == frame.children_mark || !pending.back().IsText()) {
      pending.push_back(Node{std::string()});
    }
    pending.back().text().append(piece);
  }

  // Puts the whitespace held for `frame` back where it was, as text.
  void Restore(Frame& frame) {
    for (size_t i = frame.held_mark; i < held_.size(); ++i) {
      const size_t at = frame.children_mark + held_[i].first + (i - frame.held_mark);
      pending_.insert(pending_.begin() + static_cast<ptrdiff_t>(at),
                      Node{std::move(held_[i].second)});
    }
    held_.resize(frame.held_mark);
  }

  static void OnNamespace(void* data, const XML_Char* prefix, const XML_Char* uri) {
    auto* self = static_cast<Parser*>(data);
    self->pending_namespaces_.emplace_back(prefix ? prefix : "", uri ? uri : "");
  }

  // Content is kept as source only in a UTF-8 document.
  static void OnXmlDeclaration(void* data, const XML_Char*, const XML_Char* encoding, int) {
    auto* self = static_cast<Parser*>(data);
    if (encoding != nullptr && !IsUtf8Name(encoding)) self->policy_ = nullptr;
  }

  static void OnDoctype(void* data, const XML_Char*, const XML_Char*, const XML_Char*, int) {
    static_cast<Parser*>(data)->Refuse("XML document type declarations (DTDs) are not accepted");
  }

  static void OnEntity(void* data, const XML_Char*, int, const XML_Char*, int, const XML_Char*,
                       const XML_Char*, const XML_Char*, const XML_Char*) {
    static_cast<Parser*>(data)->Refuse("XML entity declarations are not accepted");
  }

  const Limits limits_;
  const ElementSink& sink_;
  const SourcePolicy* policy_ = nullptr;  // null: no content kept as source
  std::shared_ptr<const char[]> owner_;   // holds document_, when content is kept
  std::string_view document_;
  std::string built_prefix_;  // SourcePolicy::built as expat names it
  // Counts the elements with namespace declarations that started or ended:
  // while it stands still, the bindings in scope do too.
  uint64_t namespace_generation_ = 0;
  // The last scope ScopeOf made, for the prefixes `last_used_`.
  std::shared_ptr<const Bindings> last_scope_;
  std::vector<std::string> last_used_;
  uint64_t last_scope_generation_ = 0;
  size_t skipped_ = 0;
  uint64_t namespaces_in_scope_ = 0;  // declared by the open elements that are nodes  // open
                                      // elements inside kept content, not made nodes
  XML_Parser parser_;
  uint64_t received_ = 0;
  Element root_;
  std::vector<Frame> stack_;
  std::vector<Node> pending_;  // the children of the open elements, in order
  UriTable uris_;
  // Whitespace-only text of the open elements that are not mixed: (position
  // among the element's children, text).
  std::vector<std::pair<size_t, std::string>> held_;
  std::vector<std::pair<std::string, std::string>> pending_namespaces_;
  std::string refusal_;
  bool done_ = false;
};

// ---- Writing ----

void AppendEscaped(std::string& out, std::string_view text, bool attribute) {
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char* entity = nullptr;
    switch (text[i]) {
      case '&':
        entity = "&amp;";
        break;
      case '<':
        entity = "&lt;";
        break;
      case '>':
        entity = "&gt;";
        break;
      case '"':
        entity = attribute ? "&quot;" : nullptr;
        break;
      case '\t':
        entity = attribute ? "&#9;" : nullptr;
        break;
      case '\n':
        entity = attribute ? "&#10;" : nullptr;
        break;
      case '\r':
        entity = "&#13;";
        break;
      default:
        break;
    }
    if (entity == nullptr) continue;
    out.append(text.substr(start, i - start));
    out.append(entity);
    start = i + 1;
  }
  out.append(text.substr(start));
}

}  // namespace

std::string Name::Clark() const {
  return uri.empty() ? local : "{" + std::string(uri.view()) + "}" + local;
}

Node::Node(const Node& other)
    : text_(other.text_),
      element_(other.element_ ? std::make_unique<Element>(*other.element_) : nullptr) {}

Node& Node::operator=(const Node& other) {
  if (this != &other) *this = Node(other);
  return *this;
}

const std::string* Element::Attr(std::string_view local) const {
  for (const Attribute& attribute : attributes) {
    if (attribute.name.uri.empty() && attribute.name.local == local) return &attribute.value;
  }
  return nullptr;
}

void Element::SetAttr(std::string_view local, std::string value) {
  for (Attribute& attribute : attributes) {
    if (attribute.name.uri.empty() && attribute.name.local == local) {
      attribute.value = std::move(value);
      return;
    }
  }
  attributes.push_back(Attribute{Name{"", std::string(local), ""}, std::move(value)});
}

const Element* Element::Child(std::string_view uri, std::string_view local) const {
  for (const Node& child : children) {
    if (!child.IsText() && child.element().name.Is(uri, local)) return &child.element();
  }
  return nullptr;
}

Element* Element::Child(std::string_view uri, std::string_view local) {
  return const_cast<Element*>(std::as_const(*this).Child(uri, local));
}

std::string Element::Text() const {
  std::string text;
  for (const Node& child : children) {
    if (child.IsText()) text += child.text();
  }
  return text;
}

bool Element::IsTextOnly() const {
  return std::all_of(children.begin(), children.end(),
                     [](const Node& child) { return child.IsText(); });
}

namespace {

// A document in memory, held by a shared buffer (not zero-filled first: the
// bytes are written once, by read or a copy).
struct SharedDocument {
  std::shared_ptr<char[]> bytes;
  size_t size = 0;
  size_t capacity = 0;

  explicit SharedDocument(size_t reserve)
      : bytes(std::make_shared_for_overwrite<char[]>(reserve)), capacity(reserve) {}
  std::string_view view() const { return std::string_view(bytes.get(), size); }
  void Grow() {
    SharedDocument bigger(capacity + std::max<size_t>(capacity, 1 << 20));
    std::memcpy(bigger.bytes.get(), bytes.get(), size);
    bigger.size = size;
    *this = std::move(bigger);
  }
};

Result<Element> ParseShared(const SharedDocument& document, const Limits& limits,
                            const ElementSink& sink, const SourcePolicy* source) {
  Parser parser(limits, sink, source, document.bytes, document.view());
  if (Status status = parser.Feed(document.view(), true); !status.ok()) return status;
  return parser.Finish();
}

// Reads what is left of `fd` whole, refusing more than `limit` bytes.
Result<SharedDocument> ReadWhole(int fd, const std::string& path, uint64_t size_hint,
                                 uint64_t limit) {
  // One byte more than the size, so that the end is found without growing.
  SharedDocument document(static_cast<size_t>(std::min(size_hint, limit)) + 1);
  while (true) {
    if (document.size == document.capacity) document.Grow();
    ssize_t n = read(fd, document.bytes.get() + document.size, document.capacity - document.size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError("cannot read " + path + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    document.size += static_cast<size_t>(n);
    if (document.size > limit) {
      return InvalidArgumentError(path + " is larger than the limit of " + std::to_string(limit) +
                                  " bytes");
    }
  }
  return document;
}

}  // namespace

Result<Element> Parse(std::string_view document, const Limits& limits, const ElementSink& sink,
                      const SourcePolicy* source) {
  if (source != nullptr) {
    SharedDocument copy(document.size());
    std::memcpy(copy.bytes.get(), document.data(), document.size());
    copy.size = document.size();
    return ParseShared(copy, limits, sink, source);
  }
  Parser parser(limits, sink);
  if (Status status = parser.Feed(document, true); !status.ok()) return status;
  return parser.Finish();
}

Result<Element> ParseFile(const std::string& path, const Limits& limits, const ElementSink& sink,
                          const SourcePolicy* source) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  std::unique_ptr<int, void (*)(int*)> closer(&fd, [](int* f) { close(*f); });
  struct stat st;
  if (fstat(fd, &st) != 0) return UnavailableError("cannot stat " + path);
  if (S_ISDIR(st.st_mode)) return InvalidArgumentError(path + " is a folder, not a feed file");
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > limits.max_bytes) {
    return InvalidArgumentError(path + " is larger than the limit of " +
                                std::to_string(limits.max_bytes) + " bytes");
  }
  if (source != nullptr) {
    auto document = ReadWhole(fd, path, static_cast<uint64_t>(st.st_size), limits.max_bytes);
    if (!document.ok()) return document.status();
    auto root = ParseShared(*document, limits, sink, source);
    if (!root.ok()) return InvalidArgumentError(path + ": " + std::string(root.status().message()));
    return root;
  }
  Parser parser(limits, sink);
  std::string buffer(1 << 20, '\0');
  while (true) {
    ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError("cannot read " + path + ": " + std::strerror(errno));
    }
    Status status = parser.Feed(std::string_view(buffer.data(), static_cast<size_t>(n)), n == 0);
    if (!status.ok()) return InvalidArgumentError(path + ": " + std::string(status.message()));
    if (n == 0) break;
  }
  auto root = parser.Finish();
  if (!root.ok()) return InvalidArgumentError(path + ": " + std::string(root.status().message()));
  return root;
}

Result<std::vector<Node>> ParseSource(const Source& source) {
  std::string text = "<s";
  for (const auto& [prefix, uri] : *source.scope) {
    text.append(prefix.empty() ? " xmlns" : " xmlns:").append(prefix).append("=\"");
    AppendEscaped(text, uri, true);
    text.push_back('"');
  }
  text.push_back('>');
  for (std::string_view piece : source.pieces) text.append(piece);
  text.append("</s>");
  Limits limits;
  limits.max_bytes = std::max<uint64_t>(limits.max_bytes, text.size());
  auto root = Parse(text, limits);
  if (!root.ok()) return root.status();
  return std::move(root->children);
}

Status ExpandSource(Element& element) {
  if (element.source == nullptr) return Status::Ok();
  auto nodes = ParseSource(*element.source);
  if (!nodes.ok()) return nodes.status();
  std::move(element.children.begin(), element.children.end(), std::back_inserter(*nodes));
  element.children = std::move(*nodes);
  element.source.reset();
  return Status::Ok();
}

struct Writer::Impl {
  struct Open {
    std::string qname;
    size_t scope_mark;
    bool indent_children;
    bool has_children;
  };

  Impl(bool indent_children, std::function<void(std::string_view)> spill_to)
      : indent(indent_children), spill(std::move(spill_to)) {
    scope.emplace_back("xml", kXmlNamespace);
  }

  void NewLine(size_t depth) {
    out.push_back('\n');
    out.append(depth, ' ');
  }

  bool Bound(std::string_view prefix) const {
    return std::any_of(scope.begin(), scope.end(),
                       [&](const auto& binding) { return binding.first == prefix; });
  }

  // The uri `prefix` is bound to here ("" when unbound).
  std::string_view Lookup(std::string_view prefix) const {
    for (auto it = scope.rbegin(); it != scope.rend(); ++it) {
      if (it->first == prefix) return it->second;
    }
    return "";
  }

  void Declare(std::string& decls, const std::string& prefix, std::string_view uri) {
    scope.emplace_back(prefix, uri);
    decls.append(prefix.empty() ? " xmlns" : " xmlns:");
    decls.append(prefix).append("=\"");
    AppendEscaped(decls, uri, true);
    decls.push_back('"');
  }

  static bool HasOwnDeclaration(const std::string& decls, const std::string& prefix) {
    std::string needle = prefix.empty() ? " xmlns=\"" : " xmlns:" + prefix + "=\"";
    return decls.find(needle) != std::string::npos;
  }

  // A prefix bound to `uri` here, declaring one if needed. Attributes need a
  // non-empty prefix for a namespace; elements may use the default.
  std::string PrefixFor(std::string_view uri, const std::string& wanted, bool attribute,
                        std::string& decls) {
    if (uri.empty()) {
      if (!attribute && !Lookup("").empty()) Declare(decls, "", "");
      return "";
    }
    if ((!attribute || !wanted.empty()) && Bound(wanted) && Lookup(wanted) == uri) return wanted;
    for (auto it = scope.rbegin(); it != scope.rend(); ++it) {
      if (it->second != uri || (attribute && it->first.empty())) continue;
      if (Lookup(it->first) == uri) return it->first;
    }
    std::string prefix = wanted;
    if (attribute && prefix.empty()) prefix = "ns";
    // A prefix this element already declares for another uri: pick another.
    for (int n = 0; HasOwnDeclaration(decls, prefix) || prefix == "xml"; ++n) {
      prefix = "ns" + std::to_string(n);
    }
    Declare(decls, prefix, uri);
    return prefix;
  }

  // Before a child: the parent's start tag gets its '>', and indentation.
  void BeforeChild() {
    if (stack.empty()) return;
    Open& parent = stack.back();
    if (!parent.has_children) {
      out.push_back('>');
      parent.has_children = true;
    }
    if (parent.indent_children) NewLine(stack.size());
  }

  // Opens `element`, and writes its source content if it has any.
  void OpenElement(const Element& element, bool element_only) {
    if (element.source == nullptr) {
      OpenElement(element.name, element.namespaces, {}, element.attributes, element_only);
      return;
    }
    if (OpenElement(element.name, element.namespaces, {}, element.attributes,
                    element_only && element.source->element_only, element.source.get())) {
      return;
    }
    // The start tag cannot be written in the bindings the source content
    // needs (its name was changed to one they hide): write the content as
    // nodes. It parsed in those bindings, so it parses again; should it
    // not, its bytes are written as they are rather than lost.
    auto nodes = ParseSource(*element.source);
    bool nodes_element_only =
        nodes.ok() && std::none_of(nodes->begin(), nodes->end(),
                                   [](const Node& child) { return child.IsText(); });
    OpenElement(element.name, element.namespaces, {}, element.attributes,
                element_only && nodes_element_only);
    if (nodes.ok()) {
      WriteNodes(*nodes);
    } else {
      WritePieces(*element.source);
    }
  }

  void WritePieces(const Source& source) {
    for (std::string_view piece : source.pieces) {
      BeforeChild();
      out.append(piece);
    }
  }

  // Writes the start tag. With `source`, first puts in scope the bindings
  // its content was written in, then writes the content; returns false,
  // having written nothing, if the start tag would hide one of them.
  bool OpenElement(const Name& name,
                   std::span<const std::pair<std::string, std::string>> namespaces,
                   std::span<const PlainAttribute> plain, std::span<const Attribute> attributes,
                   bool element_only, const Source* source = nullptr) {
    const size_t mark = scope.size();
    tag_decls.clear();
    for (const auto& [prefix, uri] : namespaces) {
      if (Lookup(prefix) != uri) Declare(tag_decls, prefix, uri);
    }
    if (source != nullptr) {  // what the content needs, where it differs here
      for (const auto& [prefix, uri] : *source->scope) {
        if (Lookup(prefix) != uri) Declare(tag_decls, prefix, uri);
      }
    }
    std::string qname = PrefixFor(name.uri, name.prefix, false, tag_decls);
    if (!qname.empty()) qname.push_back(':');
    qname.append(name.local);
    tag_attrs.clear();
    for (const auto& [local, value] : plain) {
      tag_attrs.push_back(' ');
      tag_attrs.append(local).append("=\"");
      AppendEscaped(tag_attrs, value, true);
      tag_attrs.push_back('"');
    }
    for (const Attribute& attribute : attributes) {
      tag_attrs.push_back(' ');
      if (!attribute.name.uri.empty()) {
        tag_attrs.append(PrefixFor(attribute.name.uri, attribute.name.prefix, true, tag_decls))
            .push_back(':');
      }
      tag_attrs.append(attribute.name.local).append("=\"");
      AppendEscaped(tag_attrs, attribute.value, true);
      tag_attrs.push_back('"');
    }
    if (source != nullptr && !Holds(*source->scope)) {
      scope.resize(mark);
      return false;
    }
    BeforeChild();
    out.push_back('<');
    out.append(qname).append(tag_decls).append(tag_attrs);
    bool indent_children =
        indent && element_only && (stack.empty() || stack.back().indent_children);
    stack.push_back(Open{std::move(qname), mark, indent_children, false});
    if (source != nullptr) WritePieces(*source);
    return true;
  }

  // Whether every binding in `bindings` is in effect here.
  bool Holds(const Bindings& bindings) const {
    return std::all_of(bindings.begin(), bindings.end(), [&](const auto& binding) {
      return Lookup(binding.first) == binding.second;
    });
  }

  void CloseElement() {
    Open& open = stack.back();
    if (!open.has_children) {
      out.append("/>");
    } else {
      if (open.indent_children) NewLine(stack.size() - 1);
      out.append("</").append(open.qname).push_back('>');
    }
    scope.resize(open.scope_mark);
    stack.pop_back();
    if (spill && out.size() >= kSpillBytes) {
      spill(out);
      out.clear();
    }
  }

  void WriteElement(const Element& element) {
    bool element_only = std::none_of(element.children.begin(), element.children.end(),
                                     [](const Node& child) { return child.IsText(); });
    OpenElement(element, element_only);
    WriteNodes(element.children);
    CloseElement();
  }

  void WriteNodes(std::span<const Node> nodes) {
    for (const Node& child : nodes) {
      if (child.IsText()) {
        BeforeChild();
        AppendEscaped(out, child.text(), false);
      } else {
        WriteElement(child.element());
      }
    }
  }

  static constexpr size_t kSpillBytes = 1 << 20;
  const bool indent;
  const std::function<void(std::string_view)> spill;
  std::string out;
  std::string tag_decls, tag_attrs;  // scratch for OpenElement
  std::vector<std::pair<std::string, std::string>> scope;
  std::vector<Open> stack;
};

Writer::Writer(bool indent, std::function<void(std::string_view)> spill)
    : impl_(std::make_unique<Impl>(indent, std::move(spill))) {}
Writer::~Writer() = default;

void Writer::Declaration() { impl_->out.append("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"); }
void Writer::Append(const xml::Element& element) { impl_->WriteElement(element); }
void Writer::Open(const xml::Element& element, bool element_only) {
  impl_->OpenElement(element, element_only);
}
void Writer::Open(const Name& name, std::span<const PlainAttribute> plain,
                  std::span<const Attribute> attributes, bool element_only) {
  impl_->OpenElement(name, {}, plain, attributes, element_only);
}
void Writer::Close() { impl_->CloseElement(); }
void Writer::Text(std::string_view text) {
  impl_->BeforeChild();
  AppendEscaped(impl_->out, text, false);
}
std::string Writer::Take() {
  if (impl_->indent) impl_->out.push_back('\n');
  return std::move(impl_->out);
}

std::string Write(const Element& root) {
  Writer writer(true);
  writer.Declaration();
  writer.Append(root);
  return writer.Take();
}

std::string WriteFragment(const Element& element) {
  Writer writer(false);
  writer.Append(element);
  return writer.Take();
}

bool IsValidText(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<uint8_t>(text[i]);
    uint32_t cp;
    size_t length;
    if (byte < 0x80) {
      cp = byte;
      length = 1;
    } else if ((byte & 0xE0) == 0xC0) {
      cp = byte & 0x1F;
      length = 2;
    } else if ((byte & 0xF0) == 0xE0) {
      cp = byte & 0x0F;
      length = 3;
    } else if ((byte & 0xF8) == 0xF0) {
      cp = byte & 0x07;
      length = 4;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      auto next = static_cast<uint8_t>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinimum[length]) return false;  // overlong
    bool allowed = cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) ||
                   (cp >= 0xE000 && cp <= 0xFFFD) || (cp >= 0x10000 && cp <= 0x10FFFF);
    if (!allowed) return false;
    i += length;
  }
  return true;
}

bool IsNcName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  auto start = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  if (!start(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return start(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

}  // namespace meshsync::xml
