#include "llm/redact.hpp"

namespace mooring::llm {

namespace {

constexpr std::size_t min_key_tail = 8;  // "sk-" + this many
constexpr std::size_t min_base64_run = 32;

bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
// Characters of a token, a key or a base64 run ('*' for masked keys).
bool is_run_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '=' || c == '_' || c == '-' ||
         c == '.' || c == '~' || c == '*';
}
bool is_base64_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '=' || c == '_' || c == '-';
}
char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (lower(text[i]) != prefix[i]) return false;
  return true;
}

// A key shorter than this (a placeholder: "x", "EMPTY", "ollama") is replaced
// only where it stands alone, not inside words ("max_tokens", "nginx").
constexpr std::size_t short_key = 8;

std::string replace_all(std::string_view text, std::string_view needle) {
  std::string out;
  out.reserve(text.size());
  std::size_t at = 0;
  std::size_t from = 0;
  for (auto found = text.find(needle); found != std::string_view::npos;
       found = text.find(needle, from)) {
    const auto end = found + needle.size();
    const bool alone = (found == 0 || !is_run_char(text[found - 1])) &&
                       (end == text.size() || !is_run_char(text[end]));
    if (needle.size() < short_key && !alone) {
      from = found + 1;
      continue;
    }
    out.append(text.substr(at, found - at));
    out.append(redacted_marker);
    at = from = end;
  }
  out.append(text.substr(at));
  return out;
}

// Redacts the base64-shaped stretches of one run of token characters.
void redact_run(std::string_view run, std::string& out) {
  if (run.starts_with("sk-")) {
    std::size_t end = 3;
    while (end < run.size() && (is_alpha(run[end]) || is_digit(run[end]) || run[end] == '_' ||
                                run[end] == '-' || run[end] == '*'))
      ++end;
    if (end - 3 >= min_key_tail) {
      out.append(redacted_marker);
      if (end < run.size()) redact_run(run.substr(end), out);
      return;
    }
  }
  // Split at the characters base64 does not use ('.', '~', '*'): a JWT's
  // parts, a URL's segments.
  std::size_t start = 0;
  while (start <= run.size()) {
    std::size_t end = start;
    while (end < run.size() && is_base64_char(run[end])) ++end;
    const auto part = run.substr(start, end - start);
    bool digit = false, letter = false;
    for (char c : part) {
      digit = digit || is_digit(c);
      letter = letter || is_alpha(c);
    }
    if (part.size() >= min_base64_run && digit && letter) {
      out.append(redacted_marker);
    } else {
      out.append(part);
    }
    if (end == run.size()) break;
    out += run[end];
    start = end + 1;
  }
}

}  // namespace

std::string redact(std::string_view original, std::string_view api_key) {
  const std::string keyless =
      api_key.empty() ? std::string(original) : replace_all(original, api_key);
  const std::string_view text = keyless;
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const bool at_boundary = i == 0 || !is_run_char(text[i - 1]);
    if (at_boundary && starts_with_nocase(text.substr(i), "bearer")) {
      std::size_t j = i + 6;
      std::size_t spaces = 0;
      while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j, ++spaces;
      std::size_t end = j;
      while (end < text.size() && is_run_char(text[end])) ++end;
      if (spaces > 0 && end > j) {
        out.append(text.substr(i, j - i));
        out.append(redacted_marker);
        i = end;
        continue;
      }
    }
    if (is_run_char(text[i])) {
      std::size_t end = i;
      while (end < text.size() && is_run_char(text[end])) ++end;
      redact_run(text.substr(i, end - i), out);
      i = end;
      continue;
    }
    out += text[i++];
  }
  return out;
}

}  // namespace mooring::llm
