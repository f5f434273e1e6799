#include "llm/utf8.hpp"

#include <gtest/gtest.h>

#include <vector>

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

// What a parser with allow_invalid_utf8 makes of the marked text, in pieces
// as events carry them, mended.
std::string mended(const std::vector<std::string>& parsed_pieces) {
  SurrogateJoiner surrogates;
  Utf8Repairer repairer;
  std::string out;
  for (const auto& piece : parsed_pieces) out += repairer.feed(surrogates.feed(piece));
  out += repairer.feed(surrogates.finish());
  return out + repairer.finish();
}

TEST(Utf8, LoneSurrogateEscapesAreMarkedAndPairsLeftToTheParser) {
  EXPECT_EQ(mark_lone_surrogates(R"({"a":"\ud83d\ude00 \u00e9 \\ud83d \n"})"), std::nullopt);
  EXPECT_EQ(mark_lone_surrogates(R"("\ud83d")"), "\"\xED\xA0\xBD\"");
  EXPECT_EQ(mark_lone_surrogates(R"("\uDE00x")"), "\"\xED\xB8\x80x\"");
  // A high one before another high one: the first is lone, the second paired.
  EXPECT_EQ(mark_lone_surrogates(R"("\ud83d\ud83d\ude00")"), "\"\xED\xA0\xBD\\ud83d\\ude00\"");
  // An escape cut short is the parser's to refuse.
  EXPECT_EQ(mark_lone_surrogates(R"("\ud83")"), std::nullopt);
  // Raw bytes that would read as a mark are replaced as repair would do.
  const std::string raw = "\"\xED\xA0\x80\"";
  EXPECT_EQ(mark_lone_surrogates(raw), "\"" + fffd + "\xA0\x80\"");
  EXPECT_EQ(mended({mark_lone_surrogates(raw).value()}), repair_utf8(raw));
}

TEST(Utf8, SurrogatesSplitBetweenPiecesAreJoinedAndLoneOnesReplaced) {
  const std::string high = "\xED\xA0\xBD", low = "\xED\xB8\x80";  // U+1F600 as marks
  EXPECT_EQ(mended({"a " + high, low + " b"}), "a 😀 b");
  EXPECT_EQ(mended({high, "", low}), "😀");
  EXPECT_EQ(mended({high, "x", low}), fffd + "x" + fffd);
  EXPECT_EQ(mended({high + high, low}), fffd + "😀");
  EXPECT_EQ(mended({"end " + high}), "end " + fffd);
  // A raw byte next to a mark stays the UTF-8 repair's.
  EXPECT_EQ(mended({"\xE4\xB8", "\xAD" + high, low}), "中😀");
  EXPECT_EQ(mended({"\xED", low}), fffd + fffd);
}

TEST(Utf8, APrefixNeverSplitsACharacter) {
  EXPECT_EQ(utf8_prefix("ab中", 4), "ab");
  EXPECT_EQ(utf8_prefix("ab中", 5), "ab中");
  EXPECT_EQ(utf8_prefix("ab中", 2), "ab");
  EXPECT_EQ(utf8_prefix("中", 0), "");
}

}  // namespace
}  // namespace mooring::llm
