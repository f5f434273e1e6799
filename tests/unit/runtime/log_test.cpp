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

TEST(Logging, LevelNamesAreValidated) {
  init_logging();
  EXPECT_TRUE(set_log_level("debug"));
  EXPECT_TRUE(set_log_level("off"));
  EXPECT_FALSE(set_log_level("loud"));
  EXPECT_TRUE(set_log_level("info"));
}

}  // namespace
}  // namespace mooring::runtime
