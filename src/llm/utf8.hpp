// Valid UTF-8 out of whatever an upstream sends. Text from an upstream goes
// to WebSocket text frames, JSON and logs, all of which require valid UTF-8:
// each invalid byte sequence becomes U+FFFD (one per maximal invalid subpart,
// as the Unicode standard and WHATWG recommend); valid text passes unchanged.
#pragma once

#include <string>
#include <string_view>

namespace mooring::llm {

inline constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

// Repairs a text that arrives in pieces: a multi-byte sequence split between
// two pieces is held back and completed by the next one, not replaced.
class Utf8Repairer {
 public:
  // The repaired text that `piece` completes (may be empty while a sequence
  // is incomplete).
  std::string feed(std::string_view piece);
  // Whatever is still held back: an unfinished sequence becomes U+FFFD.
  std::string finish();

 private:
  std::string pending_;  // at most 3 bytes: the start of an incomplete sequence
};

// A whole text, repaired.
std::string repair_utf8(std::string_view text);

// The longest prefix of valid UTF-8 `text` no longer than `max_bytes` that
// does not split a character.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes);

}  // namespace mooring::llm
