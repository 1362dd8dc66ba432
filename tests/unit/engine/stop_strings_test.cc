// SPDX-License-Identifier: Apache-2.0
// StopStringMatcher: matches across pieces, holds back only possible prefixes, never shows a stop.
#include "engine/stop_strings.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace lychee {
namespace {

// Feeds `pieces` and returns what was shown and whether it stopped.
std::pair<std::string, bool> Feed(std::vector<std::string> stops,
                                  const std::vector<std::string>& pieces) {
  StopStringMatcher m(std::move(stops));
  std::string shown;
  for (const std::string& p : pieces) {
    auto r = m.Push(p);
    shown += r.text;
    if (r.stopped) return {shown, true};
  }
  return {shown + m.Flush(), false};
}

TEST(StopStringMatcherTest, NoStopsPassesEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Push("Once").text, "Once");
  EXPECT_EQ(m.Push(" upon").text, " upon");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, StopInsideOnePiece) {
  EXPECT_EQ(Feed({"END"}, {"abc", "deENDfg"}), std::make_pair(std::string("abcde"), true));
}

TEST(StopStringMatcherTest, StopSpanningPieces) {
  EXPECT_EQ(Feed({"\n\n"}, {"Hello.", "\n", "\n", "More"}),
            std::make_pair(std::string("Hello."), true));
  EXPECT_EQ(Feed({"Lily"}, {"Once L", "i", "ly was"}), std::make_pair(std::string("Once "), true));
}

TEST(StopStringMatcherTest, HeldBackPrefixIsReleasedWhenItDiverges) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.Push("aST").text, "a");  // "ST" might start "STOP"
  EXPECT_EQ(m.Push("x").text, "STx");
  EXPECT_EQ(m.Push("S").text, "");
  EXPECT_EQ(m.Flush(), "S");
}

TEST(StopStringMatcherTest, EarliestOfSeveralStopsWins) {
  EXPECT_EQ(Feed({"cd", "b"}, {"abcd"}), std::make_pair(std::string("a"), true));
}

TEST(StopStringMatcherTest, NothingAfterStop) {
  StopStringMatcher m({"x"});
  EXPECT_TRUE(m.Push("axb").stopped);
  EXPECT_EQ(m.Push("more").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, EmptyStopStringsAreIgnored) {
  EXPECT_EQ(Feed({""}, {"abc"}), std::make_pair(std::string("abc"), false));
}

}  // namespace
}  // namespace lychee
