#include "runtime/log.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace mooring::runtime {
namespace {

TEST(Shorten, LeavesShortTextAlone) { EXPECT_EQ(shorten("hello", 16), "hello"); }

TEST(Shorten, CutsLongTextAndSaysHowMuchWasLeftOut) {
  const std::string image = "data:image/png;base64," + std::string(3 * 1024 * 1024, 'A');
  const auto out = shorten(image, 64);
  EXPECT_LT(out.size(), 100u);
  EXPECT_EQ(out.substr(0, 22), "data:image/png;base64,");
  EXPECT_NE(out.find("…[+" + std::to_string(image.size() - 64) + " bytes]"), std::string::npos);
}

TEST(Shorten, NeverCutsAUtf8CharacterInHalf) {
  const std::string text = "日本語のテキスト";  // 3 bytes per character
  const auto out = shorten(text, 4);              // inside the second character
  EXPECT_EQ(out.substr(0, 3), "日");
  EXPECT_NE(out.find("[+21 bytes]"), std::string::npos);
}

TEST(Shorten, EscapesLineBreaksSoAnEventStaysOneLine) {
  EXPECT_EQ(shorten("a\nb\r\tc\x01", 100), "a\\nb\\r\\tc\\x01");
}

// Defect: a header of invalid UTF-8 (a gateway client's Origin) went into a
// log line as it was, and the panel's event stream, whose frames are text,
// was dropped by the browser. Bytes of no UTF-8 character are escaped.
TEST(Shorten, EscapesBytesOfNoUtf8CharacterAndKeepsTheRest) {
  EXPECT_EQ(shorten("http://\xff\xfe.example", 100), "http://\\xff\\xfe.example");
  // A surrogate, an overlong '/', a sequence cut short; then real characters.
  EXPECT_EQ(shorten("\xed\xa0\x80|\xc0\xaf|\xe6\x97|日本|😀", 100),
            "\\xed\\xa0\\x80|\\xc0\\xaf|\\xe6\\x97|日本|😀");
}

TEST(Logging, ElidedFieldsAreShortenedInLogLines) {
  init_logging();
  set_max_field_bytes(32);
  std::vector<std::string> lines;
  const int id = add_log_observer(
      [&](spdlog::level::level_enum, std::string_view line) { lines.emplace_back(line); });
  const std::string blob(100000, 'x');
  log::info("request body: {}", elide(blob));
  remove_log_observer(id);
  set_max_field_bytes(512);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LT(lines[0].size(), 200u);
  EXPECT_NE(lines[0].find("[+99968 bytes]"), std::string::npos);
}

// Defect: a value a peer controls that reached a log call without elide()
// (a OneBot lifecycle's sub_type) could forge log lines with a line break and
// write lines of any length. Now every event is one line, of bounded length.
TEST(Logging, AValueLoggedWithoutElideCanNeitherForgeALineNorFloodTheLog) {
  init_logging();
  std::vector<std::string> lines;
  const int id = add_log_observer(
      [&](spdlog::level::level_enum, std::string_view line) { lines.emplace_back(line); });
  log::info("lifecycle {}", "x\n2026-11-29 00:00:00.000 error forged");
  log::info("lifecycle {}", std::string(900 * 1024, 'y'));
  log::info("lifecycle {}", "enable");
  log::info("origin {}", "http://\xff\xfe.example");
  remove_log_observer(id);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[3].find("origin http://\\xff\\xfe.example"), std::string::npos) << lines[3];
  EXPECT_EQ(lines[0].find('\n'), std::string::npos) << lines[0];
  const std::string escaped = "lifecycle x\\n2026-11-29 00:00:00.000 error forged";
  EXPECT_NE(lines[0].find(escaped), std::string::npos) << lines[0];
  EXPECT_LT(lines[1].size(), 17u * 1024);
  EXPECT_NE(lines[1].find("bytes]"), std::string::npos);
  EXPECT_NE(lines[2].find(" info  lifecycle enable"), std::string::npos) << lines[2];
}

TEST(Logging, LevelNamesAreValidated) {
  init_logging();
  EXPECT_TRUE(set_log_level("debug"));
  EXPECT_TRUE(set_log_level("off"));
  EXPECT_FALSE(set_log_level("loud"));
  EXPECT_TRUE(set_log_level("info"));
}

}  // namespace
}  // namespace mooring::runtime
