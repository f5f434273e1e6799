#include "llm/utf8.hpp"

#include <algorithm>

namespace mooring::llm {

namespace {

// The length of the sequence a lead byte starts and the range its second byte
// must fall in (Unicode Table 3-7, "well-formed UTF-8 byte sequences"); 0 for
// a byte that cannot start a sequence.
struct Lead {
  std::size_t length = 0;
  unsigned char second_low = 0x80;
  unsigned char second_high = 0xBF;
};

Lead lead_of(unsigned char b) {
  if (b < 0x80) return {1};
  if (b >= 0xC2 && b <= 0xDF) return {2};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b >= 0xE1 && b <= 0xEC) return {3};
  if (b == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (b >= 0xEE && b <= 0xEF) return {3};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // nothing above U+10FFFF
  return {0};
}

// Appends the repaired form of `text` to `out`. With `hold_incomplete`, an
// incomplete sequence at the very end is returned instead of replaced.
std::string_view repair_into(std::string_view text, std::string& out, bool hold_incomplete) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      std::size_t end = i + 1;
      while (end < text.size() && static_cast<unsigned char>(text[end]) < 0x80) ++end;
      out.append(text.substr(i, end - i));
      i = end;
      continue;
    }
    const Lead lead = lead_of(b);
    if (lead.length == 0) {
      out.append(replacement_character);
      ++i;
      continue;
    }
    std::size_t k = 1;  // bytes of the sequence that are valid so far
    for (; k < lead.length && i + k < text.size(); ++k) {
      const auto c = static_cast<unsigned char>(text[i + k]);
      const auto low = k == 1 ? lead.second_low : 0x80;
      const auto high = k == 1 ? lead.second_high : 0xBF;
      if (c < low || c > high) break;
    }
    if (k == lead.length) {
      out.append(text.substr(i, k));
    } else if (i + k == text.size() && hold_incomplete) {
      return text.substr(i);
    } else {
      out.append(replacement_character);  // the maximal invalid subpart
    }
    i += k;
  }
  return {};
}

constexpr char32_t first_high = 0xD800, first_low = 0xDC00, last_low = 0xDFFF;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The code unit of the escape "\uXXXX" at `at`, or nothing (0) if there is none.
char32_t escape_at(std::string_view json, std::size_t at) {
  if (at + 6 > json.size() || json[at] != '\\' || json[at + 1] != 'u') return 0;
  char32_t unit = 0;
  for (std::size_t k = at + 2; k < at + 6; ++k) {
    const int digit = hex_digit(json[k]);
    if (digit < 0) return 0;
    unit = unit * 16 + static_cast<char32_t>(digit);
  }
  return unit;
}

bool is_surrogate(char32_t unit) {
  return unit >= first_high && unit <= last_low;
}
bool is_low_surrogate(char32_t unit) {
  return unit >= first_low && unit <= last_low;
}

bool is_continuation(char c, unsigned char low = 0x80) {
  const auto b = static_cast<unsigned char>(c);
  return b >= low && b <= 0xBF;
}

// The surrogate a mark at `at` stands for (ED A0..BF 80..BF), or 0.
char32_t mark_at(std::string_view text, std::size_t at) {
  if (at + 3 > text.size() || text[at] != '\xED' || !is_continuation(text[at + 1], 0xA0) ||
      !is_continuation(text[at + 2]))
    return 0;
  return 0xD000 | (static_cast<char32_t>(text[at + 1] & 0x3F) << 6) |
         static_cast<char32_t>(text[at + 2] & 0x3F);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x10000) {  // a surrogate's mark
    out += static_cast<char>(0xE0 | (cp >> 12));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
  }
  out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  out += static_cast<char>(0x80 | (cp & 0x3F));
}

}  // namespace

std::optional<std::string> mark_lone_surrogates(std::string_view json) {
  constexpr std::string_view escape_or_ed = "\\\xED";
  std::optional<std::string> out;  // made at the first change
  std::size_t copied = 0;          // json[0, copied) is in `out` already
  auto replace = [&](std::size_t at, std::size_t length) -> std::string& {
    if (!out) out.emplace().reserve(json.size() + 8);
    out->append(json.substr(copied, at - copied));
    copied = at + length;
    return *out;
  };
  for (auto at = json.find_first_of(escape_or_ed); at < json.size();
       at = json.find_first_of(escape_or_ed, at)) {
    if (json[at] == '\xED') {
      if (at + 1 < json.size() && is_continuation(json[at + 1], 0xA0))
        replace(at, 1).append(replacement_character);
      at += 1;
      continue;
    }
    const char32_t unit = escape_at(json, at);
    if (!is_surrogate(unit)) {
      at += 2;  // any other escape, "\\" and "\"" included
    } else if (!is_low_surrogate(unit) && is_low_surrogate(escape_at(json, at + 6))) {
      at += 12;  // a pair: the parser reads it
    } else {
      append_utf8(replace(at, 6), unit);
      at += 6;
    }
  }
  if (out) out->append(json.substr(copied));
  return out;
}

std::string SurrogateJoiner::feed(std::string_view piece) {
  std::string out;
  out.reserve(piece.size() + 4);
  auto release_held = [&] {
    if (held_high_ == 0) return;
    out.append(replacement_character);
    held_high_ = 0;
  };
  std::size_t at = 0;
  while (at < piece.size()) {
    const auto ed = std::min(piece.find('\xED', at), piece.size());
    if (ed > at) {
      release_held();
      out.append(piece.substr(at, ed - at));
      at = ed;
      continue;
    }
    const char32_t unit = mark_at(piece, at);
    if (unit == 0) {
      release_held();
      out += piece[at++];  // a raw ED, for the UTF-8 repair after this
    } else if (!is_low_surrogate(unit)) {
      release_held();
      held_high_ = unit;
      at += 3;
    } else if (held_high_ != 0) {
      append_utf8(out, 0x10000 + ((held_high_ - first_high) << 10) + (unit - first_low));
      held_high_ = 0;
      at += 3;
    } else {
      out.append(replacement_character);
      at += 3;
    }
  }
  return out;
}

std::string SurrogateJoiner::finish() {
  if (held_high_ == 0) return {};
  held_high_ = 0;
  return std::string(replacement_character);
}

std::string Utf8Repairer::feed(std::string_view piece) {
  std::string out;
  out.reserve(pending_.size() + piece.size());
  std::string_view left;
  if (pending_.empty()) {
    left = repair_into(piece, out, true);
  } else {
    const std::string joined = pending_ + std::string(piece);
    left = repair_into(joined, out, true);
    pending_ = std::string(left);  // copied before `joined` goes
    return out;
  }
  pending_ = std::string(left);
  return out;
}

std::string Utf8Repairer::finish() {
  std::string out;
  repair_into(pending_, out, false);
  pending_.clear();
  return out;
}

std::string repair_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  repair_into(text, out, false);
  return out;
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

}  // namespace mooring::llm
