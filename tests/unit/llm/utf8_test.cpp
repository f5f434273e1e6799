#include "llm/utf8.hpp"

#include <gtest/gtest.h>

namespace mooring::llm {
namespace {

const std::string fffd(replacement_character);

TEST(Utf8, ValidTextPassesUnchanged) {
  const std::string text = "plain ascii, é, 中文, 🙂, \xF4\x8F\xBF\xBF";
  EXPECT_EQ(repair_utf8(text), text);
}

TEST(Utf8, EachInvalidSubpartBecomesOneReplacement) {
  EXPECT_EQ(repair_utf8("a\xFF"
                        "b"),
            "a" + fffd + "b");
  EXPECT_EQ(repair_utf8("\xC0\xAF"), fffd + fffd);                        // overlong '/'
  EXPECT_EQ(repair_utf8("\xED\xA0\x80"), fffd + fffd + fffd);             // a surrogate
  EXPECT_EQ(repair_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
  EXPECT_EQ(repair_utf8("\xE4\xB8"
                        "x"),
            fffd + "x");                                      // truncated 3-byte sequence
  EXPECT_EQ(repair_utf8("end \xF0\x9F\x99"), "end " + fffd);  // truncated at the end
  EXPECT_EQ(repair_utf8("\x80\x80"), fffd + fffd);            // lone continuation bytes
}

TEST(Utf8, ASequenceSplitBetweenPiecesIsJoinedNotReplaced) {
  const std::string text =
      "a中🙂é\xFF"
      "z";
  const std::string expected = "a中🙂é" + fffd + "z";
  for (std::size_t split = 0; split <= text.size(); ++split) {
    for (std::size_t second = split; second <= text.size(); ++second) {
      Utf8Repairer repairer;
      std::string out = repairer.feed(text.substr(0, split));
      out += repairer.feed(text.substr(split, second - split));
      out += repairer.feed(text.substr(second));
      out += repairer.finish();
      EXPECT_EQ(out, expected) << "split at " << split << " and " << second;
    }
  }
  Utf8Repairer byte_by_byte;
  std::string out;
  for (char c : text) out += byte_by_byte.feed(std::string_view(&c, 1));
  EXPECT_EQ(out + byte_by_byte.finish(), expected);
}

TEST(Utf8, AnUnfinishedSequenceAtTheEndIsReplacedByFinish) {
  Utf8Repairer repairer;
  EXPECT_EQ(repairer.feed("ok \xE4\xB8"), "ok ");
  EXPECT_EQ(repairer.finish(), fffd);
  EXPECT_EQ(repairer.finish(), "");
}

TEST(Utf8, APrefixNeverSplitsACharacter) {
  EXPECT_EQ(utf8_prefix("ab中", 4), "ab");
  EXPECT_EQ(utf8_prefix("ab中", 5), "ab中");
  EXPECT_EQ(utf8_prefix("ab中", 2), "ab");
  EXPECT_EQ(utf8_prefix("中", 0), "");
}

}  // namespace
}  // namespace mooring::llm
