// FeedSync 1.0: the spec's examples as parse/serialize vectors, the six
// scenarios of Microsoft's sample test script as golden files, the errata
// choices (docs/feedsync.md), and hostile input.
//
// MESHSYNC_UPDATE_GOLDEN=1 rewrites the golden files instead of comparing.
#include "feed/feedsync.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace meshsync::feedsync {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string Vector(const std::string& name) {
  return Slurp(std::string(MESHSYNC_FEED_TEST_DIR) + "/vectors/" + name);
}

Feed MustParse(std::string_view text) {
  auto feed = ParseFeed(text);
  EXPECT_TRUE(feed.ok()) << feed.status().ToString();
  return feed.ok() ? std::move(*feed) : Feed{};
}

Timestamp At(std::string_view text) {
  auto when = Timestamp::Parse(text);
  EXPECT_TRUE(when.ok()) << text;
  return *when;
}

std::string Canonical(const Item& item, Format format = Format::kRss) {
  return xml::WriteFragment(ItemElement(item, format));
}

// An RSS item with a title, created by `by`.
Item NewItem(const std::string& id, const std::string& title, const std::string& by,
             std::string_view when) {
  Item item;
  item.element.name = xml::Name{"", "item", ""};
  xml::Element t;
  t.name = xml::Name{"", "title", ""};
  t.children.push_back(xml::Node{title});
  item.element.children.push_back(xml::Node{std::move(t)});
  EXPECT_TRUE(Create(item, id, by, At(when)).ok());
  return item;
}

void SetTitle(Item& item, const std::string& title) {
  item.element.Child("", "title")->children.at(0).text() = title;
}

std::string Title(const Item& item) { return item.element.Child("", "title")->Text(); }

std::string HistoryString(const Item& item) {
  std::string out;
  for (const History& h : item.sync.history) {
    if (!out.empty()) out += ",";
    out += h.by.value_or("") + std::to_string(h.sequence);
  }
  return out;
}

std::string RssText(const std::string& channel, const std::string& after_channel) {
  return "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'><channel>" + channel +
         "</channel>" + after_channel + "</rss>";
}

// ---- Vectors ----

TEST(FeedSyncVectors, SpecRssExampleParsesAndRoundTrips) {
  Feed feed = MustParse(Vector("spec_rss.xml"));
  EXPECT_EQ(feed.format, Format::kRss);
  ASSERT_TRUE(feed.sharing.has_value());
  EXPECT_EQ(feed.sharing->since, "2005-02-13T18:30:02Z");
  EXPECT_EQ(feed.sharing->until, "2005-05-23T18:30:02Z");
  ASSERT_EQ(feed.sharing->related.size(), 2u);
  EXPECT_EQ(feed.sharing->related[0].type, "complete");
  EXPECT_EQ(feed.sharing->related[1].title, "To Do List (Jacks Copy)");
  ASSERT_EQ(feed.items.size(), 1u);
  const Item& item = feed.items[0];
  EXPECT_EQ(item.sync.id, "item_1_myapp_2005-05-21T11:43:33Z");
  EXPECT_EQ(item.sync.updates, 3u);
  EXPECT_EQ(HistoryString(item), "JEO20003,REO17502,REO17501");
  EXPECT_EQ(item.sync.topmost().when, At("2005-05-21T11:43:33Z"));
  EXPECT_EQ(item.element.Child("", "description")->Text(), "Get milk, eggs, butter and bread");
  // The channel's own elements stay, spaces inside <link> included.
  EXPECT_EQ(feed.Container().Child("", "link")->Text(), " http://example.com/partial.xml ");

  std::string written = WriteFeed(feed);
  EXPECT_EQ(WriteFeed(MustParse(written)), written);
  EXPECT_NE(
      written.find("<sx:history sequence=\"3\" when=\"2005-05-21T11:43:33Z\" by=\"JEO2000\"/>"),
      std::string::npos);
  EXPECT_NE(written.find("<sx:related link=\"http://example.com/all.xml\" type=\"complete\"/>"),
            std::string::npos);
}

TEST(FeedSyncVectors, SpecAtomExampleParsesAndRoundTrips) {
  Feed feed = MustParse(Vector("spec_atom.xml"));
  EXPECT_EQ(feed.format, Format::kAtom);
  ASSERT_EQ(feed.items.size(), 1u);
  // E14: the example's id holds a space; it is read leniently.
  EXPECT_EQ(feed.items[0].sync.id, "item 1_myapp_2005-05-21T11:43:33Z");
  EXPECT_FALSE(IsValidId(feed.items[0].sync.id));
  EXPECT_EQ(feed.items[0].element.Child(kAtomNamespace, "title")->Text(), "Buy groceries");
  std::string written = WriteFeed(feed);
  EXPECT_EQ(WriteFeed(MustParse(written)), written);
  // Atom stays the default namespace; no element gets a prefix it did not have.
  EXPECT_NE(written.find("<feed xmlns=\"http://www.w3.org/2005/Atom\" "
                         "xmlns:sx=\"http://feedsync.org/2007/feedsync\">"),
            std::string::npos);
  EXPECT_NE(written.find("<entry>"), std::string::npos);
  EXPECT_NE(written.find("<name>Ray Ozzie</name>"), std::string::npos);
}

TEST(FeedSyncVectors, ConflictsAndForeignElementsAreKept) {
  Feed feed = MustParse(Vector("rss_conflicts.xml"));
  ASSERT_EQ(feed.items.size(), 1u);
  const Item& item = feed.items[0];
  ASSERT_EQ(item.sync.conflicts.size(), 1u);
  EXPECT_EQ(Title(item.sync.conflicts[0]), "Buy icecream");
  EXPECT_EQ(item.sync.conflicts[0].sync.updates, 1u);
  // <customer id='1'/> is foreign to RSS and FeedSync: kept, on the item
  // and on its conflict.
  ASSERT_NE(item.element.Child("", "customer"), nullptr);
  EXPECT_EQ(*item.element.Child("", "customer")->Attr("id"), "1");
  std::string written = WriteFeed(feed);
  Feed again = MustParse(written);
  EXPECT_EQ(Canonical(again.items[0]), Canonical(item));
  EXPECT_EQ(WriteFeed(again), written);
}

TEST(FeedSyncVectors, ForeignNamespacesSurviveBeingMovedBetweenFeeds) {
  // An item from a feed that binds its extension namespace to `x` is merged
  // into a feed that does not know it: the result declares what it needs.
  Feed incoming = MustParse(
      "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync' "
      "xmlns:x='urn:example:ext'><channel><title>t</title>"
      "<item x:flag='yes'><title>a</title><x:note lang='en'>hi <x:b>there</x:b></x:note>"
      "<sx:sync id='i1' updates='1'><sx:history sequence='1' by='ep'/></sx:sync></item>"
      "</channel></rss>");
  Feed local = Feed::New(Format::kRss, "local");
  ASSERT_TRUE(Merge(local, std::move(incoming)).ok());
  std::string written = WriteFeed(local);
  Feed again = MustParse(written);
  ASSERT_EQ(again.items.size(), 1u);
  const xml::Element& item = again.items[0].element;
  const xml::Element* note = item.Child("urn:example:ext", "note");
  ASSERT_NE(note, nullptr) << written;
  EXPECT_EQ(note->children.size(), 2u);  // mixed content kept as it was
  EXPECT_EQ(note->Child("urn:example:ext", "b")->Text(), "there");
  ASSERT_EQ(item.attributes.size(), 1u);
  EXPECT_EQ(item.attributes[0].name.uri, "urn:example:ext");
  EXPECT_EQ(item.attributes[0].value, "yes");
}

TEST(FeedSyncVectors, ItemsWithoutSyncAreLeftAlone) {
  Feed feed = MustParse(
      "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:sx='http://feedsync.org/2007/feedsync'>"
      "<title>t</title><entry><title>plain</title></entry></feed>");
  EXPECT_TRUE(feed.items.empty());
  EXPECT_NE(WriteFeed(feed).find("<title>plain</title>"), std::string::npos);
}

TEST(FeedSyncVectors, TextOutsideElementsIsKept) {
  // Found by the fuzzer: stray text in the channel and the root was dropped.
  Feed feed =
      MustParse(RssText("<title>t</title>stray<item><title>a</title><sx:sync id='i' "
                        "updates='1'><sx:history sequence='1' by='e'/></sx:sync></item>",
                        ":"));
  std::string written = WriteFeed(feed);
  EXPECT_NE(written.find("stray"), std::string::npos);
  EXPECT_NE(written.find("</channel>:</rss>"), std::string::npos);
  EXPECT_EQ(WriteFeed(MustParse(written)), written);
}

TEST(XmlWhitespace, IndentationGoesMixedAndTextOnlyContentKeepsEveryByte) {
  auto root = xml::Parse(
      "<r>\n <p>  <b>x</b> <i>y</i> tail</p>\n <t>   </t>\n <e>\n  <a/>\n  <c/>\n </e>\n</r>");
  ASSERT_TRUE(root.ok()) << root.status().message();
  // Element-only content (r, e) loses its indentation; mixed content (p)
  // keeps the whitespace before, between and after its elements; a
  // whitespace-only text element (t) keeps its text.
  EXPECT_EQ(xml::WriteFragment(*root),
            "<r><p>  <b>x</b> <i>y</i> tail</p><t>   </t><e><a/><c/></e></r>");
  auto taken =
      xml::Parse("<r> <x>1</x>\n <y/> </r>", {},
                 [](xml::Element& element, const xml::Element&,
                    const xml::Element&) -> Result<bool> { return element.name.local == "x"; });
  ASSERT_TRUE(taken.ok());
  ASSERT_EQ(taken->children.size(), 2u);  // the place x was taken from, and y
  EXPECT_TRUE(taken->children[0].element().name.local.empty());
  EXPECT_EQ(taken->children[1].element().name.local, "y");
  auto refused =
      xml::Parse("<r>\n<x/></r>", {},
                 [](xml::Element&, const xml::Element&, const xml::Element&) -> Result<bool> {
                   return InvalidArgumentError("no x here");
                 });
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), "no x here at line 2, column 5");
}

TEST(FeedSyncDates, Rfc3339) {
  EXPECT_EQ(At("1970-01-01T00:00:00Z").seconds, 0);
  EXPECT_EQ(At("2005-05-21T11:43:33Z"), At("2005-05-21T13:43:33+02:00"));
  EXPECT_EQ(At("2005-05-21t11:43:33z"), At("2005-05-21T11:43:33Z"));
  EXPECT_EQ(At("2008-01-01T00:00:00.5Z").nanos, 500000000u);
  EXPECT_EQ(At("2005-05-21T11:43:33Z").ToString(), "2005-05-21T11:43:33Z");
  EXPECT_EQ(At("2005-05-21T11:43:33.250-01:30").ToString(), "2005-05-21T13:13:33.25Z");
  EXPECT_EQ(At("2000-02-29T00:00:00Z").ToString(), "2000-02-29T00:00:00Z");
  EXPECT_EQ(At("1999-12-31T23:59:59.000000001Z").ToString(), "1999-12-31T23:59:59.000000001Z");
  EXPECT_EQ(At("0042-07-04T05:06:07.1Z").ToString(), "0042-07-04T05:06:07.1Z");
  EXPECT_EQ(At("0000-01-01T01:00:00+01:00").ToString(), "0000-01-01T00:00:00Z");
  EXPECT_EQ(At("9999-12-31T22:59:59-01:00").ToString(), "9999-12-31T23:59:59Z");
  for (const char* bad :
       {"11-05-2007T19:33:27Z", "2005-05-21 11:43:33Z", "2005-05-21T11:43:33",
        "2005-13-01T00:00:00Z", "2001-02-29T00:00:00Z", "2005-05-21T24:00:00Z",
        "2005-05-21T11:43:33.Z", "2005-05-21T11:43:33+0200", "", "2005-05-21T11:43:33Zjunk",
        "-005-05-21T11:43:33Z", "0000-01-01T00:30:00+01:00", "9999-12-31T23:59:59-00:01"}) {
    EXPECT_FALSE(Timestamp::Parse(bad).ok()) << bad;
  }
}

// ---- The six scenarios of Microsoft's test script, as golden files ----

class Golden {
 public:
  static void Check(const std::string& name, const Feed& feed) {
    std::string path = std::string(MESHSYNC_FEED_TEST_DIR) + "/golden/" + name;
    std::string written = WriteFeed(feed);
    if (std::getenv("MESHSYNC_UPDATE_GOLDEN") != nullptr) {
      std::ofstream(path, std::ios::binary) << written;
      return;
    }
    EXPECT_EQ(written, Slurp(path)) << "golden file " << path;
  }
};

// Each item as text, its conflicts as a sorted set, by id.
std::map<std::string, std::string> ItemsById(const Feed& feed) {
  std::map<std::string, std::string> out;
  for (const Item& item : feed.items) {
    Item bare = item;
    bare.sync.conflicts.clear();
    std::set<std::string> conflicts;
    for (const Item& conflict : item.sync.conflicts) conflicts.insert(Canonical(conflict));
    std::string text = Canonical(bare);
    for (const std::string& conflict : conflicts) text += "\n  conflict " + conflict;
    out[item.sync.id] = text;
  }
  return out;
}

// Merges both ways, as two endpoints exchanging feeds would.
void Exchange(Feed& ep1, Feed& ep2) {
  Feed copy1 = MustParse(WriteFeed(ep1));
  ASSERT_TRUE(Merge(ep1, MustParse(WriteFeed(ep2))).ok());
  ASSERT_TRUE(Merge(ep2, std::move(copy1)).ok());
  EXPECT_EQ(ItemsById(ep1), ItemsById(ep2)) << "both endpoints hold the same items";
}

TEST(FeedSyncScenarios, SampleTestScript) {
  Feed ep1 = Feed::New(Format::kRss, "EP1");
  Feed ep2 = Feed::New(Format::kRss, "EP2");
  // 1. Independent creates: no conflict.
  ep1.items.push_back(NewItem("ep1.100", "ep1 first", "EP1", "2006-01-01T10:00:00Z"));
  ep1.items.push_back(NewItem("ep1.101", "ep1 second", "EP1", "2006-01-01T10:00:01Z"));
  ep2.items.push_back(NewItem("ep2.100", "ep2 first", "EP2", "2006-01-01T10:00:02Z"));
  ep2.items.push_back(NewItem("ep2.101", "ep2 second", "EP2", "2006-01-01T10:00:03Z"));
  Exchange(ep1, ep2);
  ASSERT_EQ(ep1.items.size(), 4u);
  for (const Item& item : ep1.items) EXPECT_TRUE(item.sync.conflicts.empty());
  Golden::Check("scenario1_creates.xml", ep1);

  // 2. Sequential updates: EP1 updates, EP2 updates what it received.
  Item* item = ep1.Find("ep1.100");
  SetTitle(*item, "ep1 first, v2");
  ASSERT_TRUE(Update(*item, "EP1", At("2006-01-01T11:00:00Z")).ok());
  ASSERT_TRUE(Merge(ep2, MustParse(WriteFeed(ep1))).ok());
  item = ep2.Find("ep1.100");
  SetTitle(*item, "ep1 first, v3 by EP2");
  ASSERT_TRUE(Update(*item, "EP2", At("2006-01-01T11:00:05Z")).ok());
  Exchange(ep1, ep2);
  EXPECT_EQ(ep1.Find("ep1.100")->sync.updates, 3u);
  EXPECT_TRUE(ep1.Find("ep1.100")->sync.conflicts.empty());
  EXPECT_EQ(Title(*ep1.Find("ep1.100")), "ep1 first, v3 by EP2");
  Golden::Check("scenario2_updates.xml", ep1);

  // 3. Concurrent updates from v3; EP2's is a second later and wins.
  item = ep1.Find("ep1.100");
  SetTitle(*item, "EP1's edit");
  ASSERT_TRUE(Update(*item, "EP1", At("2006-01-01T12:00:00Z")).ok());
  item = ep2.Find("ep1.100");
  SetTitle(*item, "EP2's edit");
  ASSERT_TRUE(Update(*item, "EP2", At("2006-01-01T12:00:01Z")).ok());
  Exchange(ep1, ep2);
  item = ep1.Find("ep1.100");
  EXPECT_EQ(Title(*item), "EP2's edit");
  ASSERT_EQ(item->sync.conflicts.size(), 1u);
  EXPECT_EQ(Title(item->sync.conflicts[0]), "EP1's edit");
  Golden::Check("scenario3_conflict.xml", ep1);

  // 4. EP2 resolves, keeping its own edit; the resolution spreads.
  ASSERT_TRUE(Resolve(*ep2.Find("ep1.100"), "EP2", At("2006-01-01T13:00:00Z"), std::nullopt).ok());
  Exchange(ep1, ep2);
  item = ep1.Find("ep1.100");
  EXPECT_TRUE(item->sync.conflicts.empty());
  EXPECT_EQ(item->sync.updates, 5u);
  EXPECT_EQ(HistoryString(*item), "EP25,EP14,EP24,EP23,EP12,EP11");
  Golden::Check("scenario4_resolved.xml", ep1);

  // 5. Independent deletes: no conflict, tombstones everywhere.
  ASSERT_TRUE(Delete(*ep1.Find("ep2.101"), "EP1", At("2006-01-01T14:00:00Z")).ok());
  ASSERT_TRUE(Delete(*ep2.Find("ep1.101"), "EP2", At("2006-01-01T14:00:01Z")).ok());
  Exchange(ep1, ep2);
  EXPECT_TRUE(ep1.Find("ep2.101")->sync.deleted);
  EXPECT_TRUE(ep1.Find("ep1.101")->sync.deleted);
  EXPECT_TRUE(ep1.Find("ep2.101")->sync.conflicts.empty());
  Golden::Check("scenario5_deletes.xml", ep1);

  // 6. Both delete one item: "by replication rules, this is a conflict".
  ASSERT_TRUE(Delete(*ep1.Find("ep2.100"), "EP1", At("2006-01-01T15:00:00Z")).ok());
  ASSERT_TRUE(Delete(*ep2.Find("ep2.100"), "EP2", At("2006-01-01T15:00:00Z")).ok());
  Exchange(ep1, ep2);
  item = ep1.Find("ep2.100");
  EXPECT_TRUE(item->sync.deleted);
  ASSERT_EQ(item->sync.conflicts.size(), 1u);
  EXPECT_EQ(*item->sync.topmost().by, "EP2");  // same when: the greater `by` wins
  Golden::Check("scenario6_concurrent_deletes.xml", ep1);
}

// ---- The worked vector and the errata ----

TEST(FeedSyncMerge, WorkedVectorLaterWhenWinsAndResolutionAbsorbsHistory) {
  Feed local = MustParse(
      "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'><channel><title>t</title>"
      "<item><title>a</title><sx:sync id='x1' updates='2'>"
      "<sx:history sequence='2' when='2008-01-01T00:01:40Z' by='kzu'/>"
      "<sx:history sequence='1' when='2008-01-01T00:00:00Z' by='kzu'/></sx:sync></item>"
      "</channel></rss>");
  Feed incoming = MustParse(
      "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'><channel><title>t</title>"
      "<item><title>b</title><sx:sync id='x1' updates='2'>"
      "<sx:history sequence='2' when='2008-01-01T00:00:50Z' by='vga'/>"
      "<sx:history sequence='1' when='2008-01-01T00:00:00Z' by='kzu'/></sx:sync></item>"
      "</channel></rss>");
  auto stats = Merge(local, std::move(incoming));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->updated, 1u);
  EXPECT_EQ(stats->conflicts, 1u);
  Item& item = local.items[0];
  EXPECT_EQ(Title(item), "a");
  ASSERT_EQ(item.sync.conflicts.size(), 1u);
  EXPECT_EQ(Title(item.sync.conflicts[0]), "b");
  // E5: Microsoft's order, update first, then the conflict's histories.
  ASSERT_TRUE(Resolve(item, "kzu", At("2008-01-02T00:00:00Z"), std::nullopt).ok());
  EXPECT_EQ(item.sync.updates, 3u);
  EXPECT_EQ(HistoryString(item), "kzu3,vga2,kzu2,kzu1");
  EXPECT_TRUE(item.sync.conflicts.empty());
}

TEST(FeedSyncMerge, IdenticalItemsMergeToOneWithoutConflict) {
  Item a = NewItem("i", "same", "ep", "2008-01-01T00:00:00Z");
  bool changed = true;
  Item merged = MergeItem(a, a, &changed);
  EXPECT_FALSE(changed);
  EXPECT_TRUE(merged.sync.conflicts.empty());
  EXPECT_EQ(Canonical(merged), Canonical(a));
}

TEST(FeedSyncMerge, NewerVersionSubsumesOlder) {
  Item old_version = NewItem("i", "v1", "ep", "2008-01-01T00:00:00Z");
  Item new_version = old_version;
  SetTitle(new_version, "v2");
  ASSERT_TRUE(Update(new_version, "ep", At("2008-01-01T00:00:01Z")).ok());
  bool changed = false;
  EXPECT_EQ(Title(MergeItem(old_version, new_version, &changed)), "v2");
  EXPECT_TRUE(changed);
  EXPECT_EQ(Title(MergeItem(new_version, old_version, &changed)), "v2");
  EXPECT_FALSE(changed);
}

TEST(FeedSyncMerge, ByCollatesOrdinallyE7) {
  // Equal updates and when, `by` of equal length: Mesh4n compared lengths
  // and found no winner; the greater byte string wins here.
  Item x = NewItem("i", "from B", "epB", "2008-01-01T00:00:00Z");
  Item y = NewItem("i", "from A", "epA", "2008-01-01T00:00:00Z");
  EXPECT_TRUE(Wins(x, y));
  EXPECT_FALSE(Wins(y, x));
  EXPECT_EQ(Title(MergeItem(y, x)), "from B");
  EXPECT_EQ(Title(MergeItem(x, y)), "from B");
}

TEST(FeedSyncMerge, FullTieKeepsTheItem) {
  // A hand-made feed: the conflict ties with the item on updates, when and
  // by. Merging the feed with itself settles after one merge instead of
  // swapping item and conflict every time (a fuzzer finding).
  auto sync = [](const char* title, int sequence) {
    return std::string("<title>") + title + "</title><sx:sync id='x' updates='4'>" +
           "<sx:history sequence='" + std::to_string(sequence) +
           "' when='2006-01-01T11:00:00Z' by='EP1'/>";
  };
  Feed feed = MustParse(RssText("<title>t</title><item>" + sync("item", 2) +
                                    "<sx:conflicts><item>" + sync("conflict", 4) +
                                    "</sx:sync></item></sx:conflicts>" + "</sx:sync></item>",
                                ""));
  Feed once = feed;
  ASSERT_TRUE(Merge(once, feed).ok());
  std::string settled = WriteFeed(once);
  for (int round = 0; round < 3; ++round) {
    Feed copy = MustParse(settled);
    Feed again = MustParse(settled);
    auto stats = Merge(again, std::move(copy));
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->updated, 0u);
    EXPECT_EQ(WriteFeed(again), settled);
  }
}

TEST(FeedSyncMerge, WinnerRulesInOrder) {
  Item base = NewItem("i", "t", "a", "2008-01-01T00:00:00Z");
  Item more_updates = base;
  ASSERT_TRUE(Update(more_updates, "a", At("2000-01-01T00:00:00Z")).ok());
  Item later = NewItem("i", "t", "a", "2008-01-01T00:00:01Z");
  EXPECT_TRUE(Wins(more_updates, later));  // updates first, even with an older when
  Item no_when = base;
  no_when.sync.history[0].when.reset();
  EXPECT_TRUE(Wins(base, no_when));  // a when beats none
  EXPECT_FALSE(Wins(no_when, base));
  Item no_by = base;
  no_by.sync.history[0].by.reset();
  EXPECT_TRUE(Wins(base, no_by));  // same when: a by beats none
  EXPECT_FALSE(Wins(base, base));  // a full tie keeps the current winner
}

TEST(FeedSyncMerge, SubsumptionWithoutByNeedsWhenAndSequenceE12) {
  History x{2, At("2008-01-01T00:00:00Z"), std::nullopt, {}};
  History same = x;
  History other_sequence{3, x.when, std::nullopt, {}};
  History with_by{2, x.when, std::string("ep"), {}};
  EXPECT_TRUE(Subsumes(same, x));
  EXPECT_FALSE(Subsumes(other_sequence, x));
  EXPECT_FALSE(Subsumes(with_by, x));
  History by_ep{4, std::nullopt, std::string("ep"), {}};
  EXPECT_TRUE(Subsumes(by_ep, with_by));
  EXPECT_FALSE(Subsumes(with_by, by_ep));
}

TEST(FeedSyncMerge, NoconflictsDropsLosersOfTheWinnerE10) {
  Item a;
  a.element.name = xml::Name{"", "item", ""};
  ASSERT_TRUE(Create(a, "i", "ep1", At("2008-01-01T00:00:00Z"), /*noconflicts=*/true).ok());
  Item b = a;
  ASSERT_TRUE(Update(a, "ep1", At("2008-01-01T00:00:01Z")).ok());
  ASSERT_TRUE(Update(b, "ep2", At("2008-01-01T00:00:02Z")).ok());
  Item merged = MergeItem(a, b);
  EXPECT_EQ(*merged.sync.topmost().by, "ep2");
  EXPECT_TRUE(merged.sync.conflicts.empty());
}

TEST(FeedSyncMerge, LaterDeleteBeatsEditAndKeepsItAsConflictE16) {
  Item base = NewItem("i", "v1", "ep1", "2008-01-01T00:00:00Z");
  Item edited = base;
  SetTitle(edited, "edited");
  ASSERT_TRUE(Update(edited, "ep1", At("2008-01-01T00:00:01Z")).ok());
  Item deleted = base;
  ASSERT_TRUE(Delete(deleted, "ep2", At("2008-01-01T00:00:02Z")).ok());
  Item merged = MergeItem(edited, deleted);
  EXPECT_TRUE(merged.sync.deleted);
  ASSERT_EQ(merged.sync.conflicts.size(), 1u);
  EXPECT_EQ(Title(merged.sync.conflicts[0]), "edited");
  // Undeleting: resolve by keeping the edit.
  ASSERT_TRUE(Resolve(merged, "ep2", At("2008-01-01T00:00:03Z"), size_t{0}).ok());
  EXPECT_FALSE(merged.sync.deleted);
  EXPECT_EQ(Title(merged), "edited");
}

TEST(FeedSyncUpdate, SequenceStaysAbovePerEndpointE6AndOwnConflictsGo) {
  // An item whose `updates` is below a sequence its endpoint already used
  // (it took on a lower count from elsewhere).
  Item item = NewItem("i", "v", "a", "2008-01-01T00:00:00Z");
  item.sync.history.insert(item.sync.history.begin(),
                           History{7, At("2008-01-01T00:00:01Z"), std::string("b"), {}});
  item.sync.updates = 2;
  Item conflict = NewItem("i", "mine", "a", "2008-01-01T00:00:00Z");
  conflict.sync.history[0].sequence = 2;
  item.sync.conflicts.push_back(conflict);
  ASSERT_TRUE(Update(item, "b", At("2008-01-01T00:00:05Z")).ok());
  EXPECT_EQ(item.sync.updates, 3u);
  EXPECT_EQ(item.sync.topmost().sequence, 8u);  // not 3: b already used 7
  EXPECT_EQ(item.sync.conflicts.size(), 1u);    // a's conflict is not b's to drop
  ASSERT_TRUE(Update(item, "a", At("2008-01-01T00:00:06Z")).ok());
  EXPECT_EQ(item.sync.topmost().sequence, 4u);  // above a's conflict's 2
  EXPECT_TRUE(item.sync.conflicts.empty());     // 3.2.4: a's own conflict is subsumed
}

TEST(FeedSyncResolve, SubsumedHistoryIsSkippedTheRestStillAddedE3) {
  Item item = NewItem("i", "w", "a", "2008-01-01T00:00:00Z");
  Item conflict;
  conflict.element = item.element;
  conflict.sync = item.sync;
  // The conflict's histories: c1 (new), a1 (subsumed by the item), d1 (new).
  conflict.sync.history = {History{1, At("2008-01-01T00:00:03Z"), std::string("c"), {}},
                           History{1, At("2008-01-01T00:00:00Z"), std::string("a"), {}},
                           History{1, At("2008-01-01T00:00:01Z"), std::string("d"), {}}};
  item.sync.conflicts.push_back(conflict);
  ASSERT_TRUE(Resolve(item, "a", At("2008-01-01T00:01:00Z"), std::nullopt).ok());
  EXPECT_EQ(HistoryString(item), "a2,c1,d1,a1");
  EXPECT_FALSE(Resolve(item, "a", At("2008-01-01T00:01:00Z"), size_t{0}).ok());
}

TEST(FeedSyncMerge, PartialFeedNeverDeletes) {
  Feed local = Feed::New(Format::kAtom, "local");
  Item a = NewItem("a", "kept", "ep", "2008-01-01T00:00:00Z");
  a.element.name = xml::Name{std::string(kAtomNamespace), "entry", ""};
  local.items.push_back(a);
  Feed partial = Feed::New(Format::kAtom, "partial");
  partial.sharing = Sharing{};
  partial.sharing->related.push_back(Related{"http://example.com/all.xml", "complete", {}});
  auto stats = Merge(local, std::move(partial));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(local.items.size(), 1u);
  EXPECT_FALSE(local.sharing.has_value()) << "incoming sx:sharing is not republished";
}

TEST(FeedSyncMerge, RssItemsMergedIntoAtomBecomeEntries) {
  Feed atom = Feed::New(Format::kAtom, "atom");
  Feed rss = Feed::New(Format::kRss, "rss");
  rss.items.push_back(NewItem("r1", "from rss", "ep", "2008-01-01T00:00:00Z"));
  ASSERT_TRUE(Merge(atom, std::move(rss)).ok());
  Feed again = MustParse(WriteFeed(atom));
  ASSERT_EQ(again.items.size(), 1u);
  EXPECT_TRUE(again.items[0].element.name.Is(kAtomNamespace, "entry"));
}

// ---- Items kept as source (ReadOptions::keep_item_source) ----

Feed MustParseSource(std::string_view text) {
  ReadOptions options;
  options.keep_item_source = true;
  auto feed = ParseFeed(text, options);
  EXPECT_TRUE(feed.ok()) << feed.status().ToString();
  return feed.ok() ? std::move(*feed) : Feed{};
}

// The feed `text` in the writer's form: read as nodes, written.
std::string Meaning(std::string_view text) { return WriteFeed(MustParse(text)); }

// An element as a tree of {uri}local names, attributes and text: what it
// means, whatever prefixes and declarations it is written with.
std::string Tree(const xml::Element& element) {
  std::vector<std::string> attributes;
  for (const xml::Attribute& a : element.attributes)
    attributes.push_back(a.name.Clark() + "=" + a.value);
  std::sort(attributes.begin(), attributes.end());
  std::string out = element.name.Clark() + "[";
  for (const std::string& a : attributes) out += a + ";";
  out += "](";
  for (const xml::Node& child : element.children) {
    out += child.IsText() ? "'" + child.text() + "'" : Tree(child.element());
  }
  return out + ")";
}

std::string Tree(std::string_view document) {
  auto root = xml::Parse(document);
  EXPECT_TRUE(root.ok()) << root.status().ToString();
  return root.ok() ? Tree(*root) : std::string();
}

// Feeds with namespaces bound in different ways, mixed content, CDATA,
// character references, empty entries and entries without sx:sync.
const std::string kAtomPrefixed =
    "<a:feed xmlns:a='http://www.w3.org/2005/Atom' xmlns:s='http://feedsync.org/2007/feedsync'"
    " xmlns:x='urn:example:one'><a:title>prefixed</a:title>"
    "<a:entry x:flag='1'><a:title>one &amp; <![CDATA[<two>]]> &#xe9;</a:title>"
    "<x:note xmlns:x='urn:example:two' xmlns='urn:example:default'><y>in default</y></x:note>"
    "<s:sync id='p1' updates='1'><s:history sequence='1' by='ep'/></s:sync></a:entry>"
    "<a:entry><a:title>no sync</a:title></a:entry><a:entry/><a:entry>\n </a:entry>"
    "<a:entry><s:sync id='p2' updates='2'><s:history sequence='2' by='ep'/>"
    "<s:history sequence='1' by='ep'/></s:sync>text around  <a:title>mixed</a:title>\n</a:entry>"
    "</a:feed>";
const std::string kAtomDefault =
    "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:sx='http://feedsync.org/2007/feedsync'"
    " xmlns:x='urn:example:other'>\n <title>default</title>\n"
    " <entry>\n  <title>local</title>\n  <x:z/>\n  <sx:sync id='p1' updates='1'>"
    "<sx:history sequence='1' by='other'/></sx:sync>\n </entry>\n</feed>";

TEST(FeedSyncSource, AFeedInTheWritersFormIsWrittenBackByteForByte) {
  for (const std::string& text : {Vector("spec_rss.xml"), Vector("spec_atom.xml"),
                                  Vector("rss_conflicts.xml"), kAtomPrefixed, kAtomDefault}) {
    const std::string canonical = Meaning(text);
    Feed feed = MustParseSource(canonical);
    ASSERT_FALSE(feed.items.empty());
    EXPECT_NE(feed.items[0].element.source, nullptr) << "the item's content is kept as source";
    EXPECT_EQ(WriteFeed(feed), canonical);
    // Any form: what is written means what the source meant.
    EXPECT_EQ(Meaning(WriteFeed(MustParseSource(text))), canonical) << text;
  }
}

TEST(FeedSyncSource, ContentKeepsItsBytesAndExpandsToTheSameNodes) {
  Feed feed = MustParseSource(kAtomPrefixed);
  ASSERT_EQ(feed.items.size(), 2u);
  const std::string written = WriteFeed(feed);
  // Written as the source wrote it: CDATA, references and all.
  EXPECT_NE(written.find("<a:title>one &amp; <![CDATA[<two>]]> &#xe9;</a:title>"),
            std::string::npos)
      << written;
  Feed nodes = MustParse(kAtomPrefixed);
  for (size_t k = 0; k < feed.items.size(); ++k) {
    xml::Element element = feed.items[k].element;
    ASSERT_TRUE(xml::ExpandSource(element).ok());
    EXPECT_EQ(element.source, nullptr);
    EXPECT_EQ(xml::WriteFragment(element), xml::WriteFragment(nodes.items[k].element));
  }
  // The mixed item keeps its text, and no indentation is added to it.
  EXPECT_NE(written.find("text around  <a:title>mixed</a:title>\n<s:sync"), std::string::npos)
      << written;
}

// Merges `incoming` into `local` with items as nodes and as source: both
// results mean the same feed.
void ExpectMergeAgrees(const std::string& local, const std::string& incoming) {
  Feed as_nodes = MustParse(local);
  auto nodes_stats = Merge(as_nodes, MustParse(incoming));
  Feed as_source = MustParseSource(local);
  auto source_stats = Merge(as_source, MustParseSource(incoming));
  ASSERT_TRUE(nodes_stats.ok() && source_stats.ok());
  EXPECT_EQ(source_stats->updated, nodes_stats->updated);
  EXPECT_EQ(source_stats->conflicts, nodes_stats->conflicts);
  EXPECT_EQ(Tree(WriteFeed(as_source)), Tree(WriteFeed(as_nodes)));
}

TEST(FeedSyncSource, MergingItemsKeptAsSourceMeansWhatMergingNodesMeans) {
  // Different prefixes and default namespaces on each side; a conflict (p1
  // on both sides); an item moved between formats, whose name the bindings
  // of its content would hide (an RSS item under Atom's default namespace).
  ExpectMergeAgrees(kAtomDefault, kAtomPrefixed);
  ExpectMergeAgrees(kAtomPrefixed, kAtomDefault);
  // The incoming items are written as their source wrote them, under a
  // start tag that declares what their content and name use and the feed
  // binds otherwise (not s:, which neither uses), under a feed that binds
  // others.
  Feed local = MustParseSource(kAtomDefault);
  ASSERT_TRUE(Merge(local, MustParseSource(kAtomPrefixed)).ok());
  const std::string written = WriteFeed(local);
  EXPECT_NE(written.find("<a:entry xmlns:a=\"http://www.w3.org/2005/Atom\" "
                         "xmlns:x=\"urn:example:one\" xmlns=\"\" x:flag=\"1\">"),
            std::string::npos)
      << written;
  EXPECT_EQ(written.find("xmlns:s="), std::string::npos);
  EXPECT_NE(written.find("<a:title>one &amp; <![CDATA[<two>]]> &#xe9;</a:title>"),
            std::string::npos);
  EXPECT_NE(written.find("text around  <a:title>mixed</a:title>\n<sx:sync"), std::string::npos);
  ExpectMergeAgrees(Vector("rss_conflicts.xml"), kAtomDefault);
  ExpectMergeAgrees(kAtomDefault, Vector("spec_rss.xml"));
  ExpectMergeAgrees(Vector("spec_atom.xml"), Vector("spec_rss.xml"));
}

TEST(FeedSyncSource, AFeedNotInUtf8IsReadAsNodes) {
  const std::string latin1 =
      "<?xml version='1.0' encoding='ISO-8859-1'?>"
      "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'><channel><title>t</title>"
      "<item><title>caf\xe9</title><sx:sync id='i' updates='1'><sx:history sequence='1' "
      "by='e'/></sx:sync></item></channel></rss>";
  Feed feed = MustParseSource(latin1);
  ASSERT_EQ(feed.items.size(), 1u);
  EXPECT_EQ(feed.items[0].element.source, nullptr);
  EXPECT_EQ(Title(feed.items[0]), "caf\xc3\xa9");
  EXPECT_EQ(WriteFeed(feed), Meaning(latin1));
}

// ---- Hostile input ----

void ExpectRefused(std::string_view text, std::string_view reason) {
  auto feed = ParseFeed(text);
  ASSERT_FALSE(feed.ok()) << text.substr(0, 200);
  EXPECT_EQ(feed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(feed.status().message().find(reason), std::string::npos)
      << feed.status().ToString() << " should mention " << reason;
}

constexpr std::string_view kHead =
    "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'><channel><title>t</title>";
constexpr std::string_view kTail = "</channel></rss>";

std::string RssWith(std::string_view item) {
  return std::string(kHead) + std::string(item) + std::string(kTail);
}

TEST(FeedSyncHostile, DtdsAndEntitiesAreRefused) {
  ExpectRefused(
      "<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
      "<rss version='2.0'><channel><title>&xxe;</title></channel></rss>",
      "DTD");
  std::string laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>";
  for (int i = 1; i < 10; ++i) {
    laughs += "<!ENTITY lol" + std::to_string(i) + " '";
    for (int k = 0; k < 10; ++k)
      laughs += "&lol" + (i == 1 ? std::string() : std::to_string(i - 1)) + ";";
    laughs += "'>";
  }
  laughs += "]><rss version='2.0'><channel><title>&lol9;</title></channel></rss>";
  ExpectRefused(laughs, "DTD");
  ExpectRefused("<rss version='2.0'><channel><title>&undefined;</title></channel></rss>",
                "malformed XML");
}

TEST(FeedSyncHostile, BadSyncDataIsRefusedWithTheItemNamed) {
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='1'/></item>"), "has no sx:history");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='1'><sx:history sequence='1'/>"
                        "</sx:sync></item>"),
                "neither when nor by");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='1'><sx:history sequence='1' "
                        "when='11-05-2007T19:33:27Z'/></sx:sync></item>"),
                "RFC 3339");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='-1'><sx:history sequence='1' by='e'/>"
                        "</sx:sync></item>"),
                "whole number");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='99999999999999999999'><sx:history "
                        "sequence='1' by='e'/></sx:sync></item>"),
                "whole number");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='1'><sx:history sequence='0' by='e'/>"
                        "</sx:sync></item>"),
                "whole number");
  ExpectRefused(RssWith("<item><sx:sync updates='1'><sx:history sequence='1' by='e'/>"
                        "</sx:sync></item>"),
                "no id");
  ExpectRefused(RssWith("<item><sx:sync id='a' updates='1' deleted='maybe'><sx:history "
                        "sequence='1' by='e'/></sx:sync></item>"),
                "true");
  std::string item =
      "<item><sx:sync id='a' updates='1'><sx:history sequence='1' by='e'/>"
      "</sx:sync></item>";
  ExpectRefused(RssWith(item + item), "two items");
  ExpectRefused("<html><body/></html>", "not an Atom or RSS");
  ExpectRefused("<rss version='2.0'><channel><title>t</title>", "malformed XML");
  ExpectRefused("", "malformed XML");
}

TEST(FeedSyncHostile, DeepNestingIsRefused) {
  std::string deep = std::string(kHead) + "<item>";
  for (int i = 0; i < 10000; ++i) deep += "<x>";
  ExpectRefused(deep, "nesting");
  std::string empty_at_limit = std::string(kHead) + "<item>";
  for (int i = 0; i < 200; ++i) empty_at_limit += i < 130 ? "<x>" : "<x/>";
  ExpectRefused(empty_at_limit, "nesting");
}

TEST(FeedSyncHostile, HundredsOfNamespacesInScopeAreRefused) {
  // Each name is looked up among the bindings in scope: thousands of them
  // would make reading and writing quadratic.
  std::string many = "<rss version='2.0' xmlns:sx='http://feedsync.org/2007/feedsync'";
  for (int i = 0; i < 300; ++i) many += " xmlns:p" + std::to_string(i) + "='urn:p'";
  ExpectRefused(many + "><channel><title>t</title></channel></rss>",
                "more than 256 namespaces in scope");
  ExpectRefused(many + "/>", "more than 256 namespaces in scope");  // an empty root
  // One on each of many items is fine: only a few are in scope at once
  // (a merged feed declares the namespaces of foreign items on each).
  std::string items(kHead);
  for (int i = 0; i < 300; ++i) {
    items += "<item xmlns:q='urn:q'><q:x/><sx:sync id='i" + std::to_string(i) +
             "' updates='1'><sx:history sequence='1' by='e'/></sx:sync></item>";
  }
  EXPECT_EQ(MustParse(items + std::string(kTail)).items.size(), 300u);
  EXPECT_EQ(MustParseSource(items + std::string(kTail)).items.size(), 300u);
}

TEST(FeedSyncHostile, OversizedFileIsRefusedBeforeReading) {
  std::string path = ::testing::TempDir() + "/huge_feed.xml";
  {
    std::ofstream out(path);
    out << kHead;
  }
  std::filesystem::resize_file(path, 1ull << 30);  // 1 GiB, sparse
  auto feed = ReadFeedFile(path);
  ASSERT_FALSE(feed.ok());
  EXPECT_NE(feed.status().message().find("larger than the limit"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(FeedSyncHostile, InvalidIdsAndEndpointsAreRefusedOnCreate) {
  Item item;
  item.element.name = xml::Name{"", "item", ""};
  EXPECT_FALSE(Create(item, "", "ep", At("2008-01-01T00:00:00Z")).ok());
  EXPECT_FALSE(Create(item, "has space", "ep", At("2008-01-01T00:00:00Z")).ok());
  EXPECT_FALSE(Create(item, "ok", "", At("2008-01-01T00:00:00Z")).ok());
  EXPECT_FALSE(Create(item, "ok", std::string("bad\x01", 4), At("2008-01-01T00:00:00Z")).ok());
  EXPECT_TRUE(Create(item, "urn:x:1", "ep", At("2008-01-01T00:00:00Z")).ok());
}

TEST(FeedSyncFiles, WriteIsAtomicAndKeepsTheMode) {
  std::string path = ::testing::TempDir() + "/atomic_feed.xml";
  Feed feed = Feed::New(Format::kAtom, "t");
  ASSERT_TRUE(WriteFeedFile(feed, path).ok());
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  feed.items.push_back(NewItem("a", "x", "ep", "2008-01-01T00:00:00Z"));
  feed.items.back().element.name = xml::Name{std::string(kAtomNamespace), "entry", ""};
  ASSERT_TRUE(WriteFeedFile(feed, path).ok());
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto read = ReadFeedFile(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->items.size(), 1u);
  // No temporary file is left next to it.
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir())) {
    if (entry.path().filename().string().starts_with("atomic_feed.xml")) ++files;
  }
  EXPECT_EQ(files, 1u);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace meshsync::feedsync
