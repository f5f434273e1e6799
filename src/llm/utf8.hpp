// Valid UTF-8 out of whatever an upstream sends. Text from an upstream goes
// to WebSocket text frames, JSON and logs, all of which require valid UTF-8:
// each invalid byte sequence becomes U+FFFD (one per maximal invalid subpart,
// as the Unicode standard and WHATWG recommend); valid text passes unchanged.
#pragma once

#include <optional>
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

// JSON text whose lone UTF-16 surrogate escapes ("\ud83d" with no "\ude00"
// right after it, or a low one alone) no longer fail a parse: each becomes
// the three bytes its code unit would take in UTF-8 (ED A0..BF xx, never
// valid UTF-8, so a parser must accept invalid UTF-8 to read the text). A
// server that streams per UTF-16 code unit may cut a character between the
// two halves of its pair, one in each event; SurrogateJoiner puts such halves
// back together. A raw byte ED before a byte A0..BF (never valid UTF-8
// either) becomes U+FFFD itself, as repair would make it, so that such bytes
// in the parsed text always stand for an escape. nullopt when the text needs
// no change.
std::optional<std::string> mark_lone_surrogates(std::string_view json);

// Resolves the marks mark_lone_surrogates left in a text that arrives in
// pieces: a high surrogate followed by a low one, even in the next piece,
// becomes their character; any other becomes U+FFFD. A high surrogate at the
// end of a piece is held back until the next piece (at most 3 bytes). Other
// bytes pass unchanged, for a Utf8Repairer to check after it.
class SurrogateJoiner {
 public:
  std::string feed(std::string_view piece);
  // U+FFFD for a high surrogate still held back, else nothing.
  std::string finish();

 private:
  char32_t held_high_ = 0;  // 0: none held
};

// A whole text, repaired.
std::string repair_utf8(std::string_view text);

// The longest prefix of valid UTF-8 `text` no longer than `max_bytes` that
// does not split a character.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes);

}  // namespace mooring::llm
