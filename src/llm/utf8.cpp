#include "llm/utf8.hpp"

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

}  // namespace

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
