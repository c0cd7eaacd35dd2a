// A small XML document model for feeds: parse with expat (namespace-aware,
// no DTDs, bounded), and write back with the namespace declarations each
// element needs, so an element can be moved between documents that use
// different prefixes.
//
// Parsing is for untrusted input. A document type declaration (and with it
// every entity, external or internal: XXE, billion laughs) is refused, as
// are documents deeper than Limits::max_depth, with more than
// Limits::max_namespaces namespaces in scope, or larger than
// Limits::max_bytes. Comments and processing
// instructions are dropped.
//
// Whitespace: text that is only whitespace between child elements (element-
// only content, such as the indentation of a feed) is dropped on parse, and
// the writer indents element-only content again. Text in mixed or text-only
// content is kept byte for byte.
//
// A reader that only passes some elements through (a merge of two feeds
// never looks inside an item) can keep their content as the source wrote it
// instead of as nodes (SourcePolicy, Element::source): less than half the
// memory and time, and the content is written back byte for byte.
//
// Values are plain, thread-compatible data.
#ifndef MESHSYNC_PROVIDERS_FEED_XML_H_
#define MESHSYNC_PROVIDERS_FEED_XML_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshsync/status.h"

namespace meshsync::xml {

// A namespace URI. A document uses a handful of namespaces on hundreds of
// thousands of elements, so the parser gives the elements of one namespace
// one shared, immutable copy. Compares and converts like a string.
class Uri {
 public:
  Uri() = default;
  Uri(std::string_view uri)  // NOLINT: implicit, as a std::string would be
      : value_(uri.empty() ? nullptr : std::make_shared<const std::string>(uri)) {}
  Uri(const std::string& uri) : Uri(std::string_view(uri)) {}  // NOLINT
  Uri(const char* uri) : Uri(std::string_view(uri)) {}         // NOLINT

  std::string_view view() const { return value_ ? std::string_view(*value_) : std::string_view(); }
  operator std::string_view() const { return view(); }  // NOLINT
  bool empty() const { return value_ == nullptr; }

  friend bool operator==(const Uri& a, std::string_view b) { return a.view() == b; }

 private:
  std::shared_ptr<const std::string> value_;  // null: no namespace
};

// A namespace-qualified name. `prefix` is how the source wrote it; the
// writer keeps it when it can and picks another when it must.
struct Name {
  Uri uri;  // empty: no namespace
  std::string local;
  std::string prefix;

  bool Is(std::string_view u, std::string_view l) const { return uri == u && local == l; }
  // "{uri}local", or "local" without a namespace.
  std::string Clark() const;
};

struct Attribute {
  Name name;
  std::string value;
};

// An attribute in no namespace, for writing: (local name, value).
using PlainAttribute = std::pair<std::string_view, std::string_view>;

class Node;

// Namespace bindings: (prefix, uri), one per prefix. The prefix "" is the
// default namespace, and the uri "" leaves it unbound.
using Bindings = std::vector<std::pair<std::string, std::string>>;

// An element's content kept as the source document wrote it (see
// SourcePolicy). The text is well-formed content under the namespace
// bindings `scope`: those in effect at the element for the prefixes its
// content uses, so no more are ever declared for it than it needs.
struct Source {
  std::shared_ptr<const char[]> document;  // holds the pieces' bytes
  std::shared_ptr<const Bindings> scope;
  // The content in document order, less the children that were parsed into
  // nodes (SourcePolicy::built). In element-only content each piece is a
  // run of whole elements, without the whitespace around it.
  std::vector<std::string_view> pieces;
  bool element_only = true;  // no text other than whitespace between elements
};

struct Element {
  Name name;
  std::vector<Attribute> attributes;
  // Namespace declarations written on this element in the source, kept so
  // that a round trip writes them where they were: (prefix, uri).
  std::vector<std::pair<std::string, std::string>> namespaces;
  std::vector<Node> children;
  // When set, the content is these source pieces followed by `children`;
  // Child, Text and IsTextOnly see only `children` (ExpandSource first).
  std::shared_ptr<const Source> source;

  // The value of attribute `local` in no namespace, or null.
  const std::string* Attr(std::string_view local) const;
  void SetAttr(std::string_view local, std::string value);
  // The first child element named {uri}local, or null.
  const Element* Child(std::string_view uri, std::string_view local) const;
  Element* Child(std::string_view uri, std::string_view local);
  // Concatenated text of the direct children.
  std::string Text() const;
  // Whether the element holds text only (no child elements).
  bool IsTextOnly() const;
};

// A child: text, or an element. An element child is held by pointer, so a
// node is small: most children in a feed are text, or elements that hold
// one text, and a document has millions of them. Copies are deep.
class Node {
 public:
  explicit Node(std::string text) : text_(std::move(text)) {}
  explicit Node(Element element) : element_(std::make_unique<Element>(std::move(element))) {}
  Node(const Node& other);
  Node& operator=(const Node& other);
  Node(Node&&) noexcept = default;
  Node& operator=(Node&&) noexcept = default;
  ~Node() = default;

  bool IsText() const { return element_ == nullptr; }
  const std::string& text() const { return text_; }
  std::string& text() { return text_; }
  const Element& element() const { return *element_; }
  Element& element() { return *element_; }

 private:
  std::string text_;                  // when a text
  std::unique_ptr<Element> element_;  // when an element
};

struct Limits {
  uint64_t max_bytes = 512ull << 20;  // input size
  int max_depth = 128;                // element nesting
  // Namespace declarations in scope at any element. A feed uses a handful;
  // each name is looked up among those in scope, so thousands would make
  // reading and writing quadratic.
  uint64_t max_namespaces = 256;
};

// Called as each child or grandchild of the root ends (where feeds keep
// their items), with its parent and the root, both still open: their names,
// attributes and namespaces are there, their children are not yet.
// Returning true takes the element: the sink has moved away what it needs,
// and the parent keeps an empty element (no name) in its place, so the
// positions of the other children stay as they were. An error stops the
// parse, and is returned with the line and column.
using ElementSink =
    std::function<Result<bool>(Element& element, const Element& parent, const Element& root)>;

// Which elements keep their content as source text (Element::source):
// `keep` is asked as each child or grandchild of the root starts, with its
// start tag (no children yet), its parent and the root. The children of a
// kept element named {built_uri}built_local are still parsed into nodes (a
// reader's own data, such as sx:sync). The whole document stays in memory
// while any element holds a piece of it. Content is kept only in a UTF-8
// document (the pieces are written back as they are).
struct SourcePolicy {
  std::function<bool(const Element& element, const Element& parent, const Element& root)> keep;
  std::string built_uri;
  std::string built_local;
};

// Parses a whole document; returns its root element. kInvalidArgument, with
// the line and column, for anything malformed or refused. With `source`,
// the document is copied so that kept content can point into it.
Result<Element> Parse(std::string_view document, const Limits& limits = {},
                      const ElementSink& sink = nullptr, const SourcePolicy* source = nullptr);
// Parses the file at `path`, streaming it unless `source` is given (the
// limit applies before it is read whole).
Result<Element> ParseFile(const std::string& path, const Limits& limits = {},
                          const ElementSink& sink = nullptr, const SourcePolicy* source = nullptr);
// The nodes that `source` stands for, parsed.
Result<std::vector<Node>> ParseSource(const Source& source);
// Turns `element`'s source content into nodes, before its other children.
Status ExpandSource(Element& element);

// Writes elements as they are given, so that a large document (a feed of
// many items kept outside its DOM) is written without being assembled: Open
// an element, write what goes inside it, Close it.
class Writer {
 public:
  // `indent`: put each child of element-only content on its own line.
  // `spill`, when given, is handed what has been written each time it
  // passes 1 MiB, so that a large document never sits whole in memory; Take
  // then returns only the rest.
  explicit Writer(bool indent, std::function<void(std::string_view)> spill = nullptr);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Declaration();
  // Writes `element` whole, as a child of the open element (or as the root).
  void Append(const xml::Element& element);
  // Writes the start tag of `element` (name, attributes, namespaces; not its
  // children, but its source content if it has any). `element_only`: what
  // follows holds no text, so it is indented.
  void Open(const xml::Element& element, bool element_only = true);
  // The same from parts, without building an Element: `plain` attributes
  // (in no namespace) first, then `attributes`.
  void Open(const Name& name, std::span<const PlainAttribute> plain,
            std::span<const Attribute> attributes = {}, bool element_only = true);
  void Close();
  // Writes text inside the open element.
  void Text(std::string_view text);
  std::string Take();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes `root` as a UTF-8 document with an XML declaration.
std::string Write(const Element& root);
// Writes `element` alone (with the namespace declarations it needs), no
// declaration, no indentation: a stable form for comparisons and for
// carrying an element in a string.
std::string WriteFragment(const Element& element);

// Whether `text` may appear in an XML 1.0 document (valid UTF-8, no
// control characters other than tab, newline and carriage return).
bool IsValidText(std::string_view text);
// Whether `name` is an XML name without a colon (an NCName), ASCII subset.
bool IsNcName(std::string_view name);

}  // namespace meshsync::xml

#endif  // MESHSYNC_PROVIDERS_FEED_XML_H_
