#include "chat/onebot_message.hpp"

#include <boost/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <unordered_map>

namespace mooring::chat::onebot {

namespace json = boost::json;

std::optional<std::string_view> Segment::get(std::string_view key) const {
  for (const auto& [name, value] : data)
    if (name == key) return std::string_view(value);
  return std::nullopt;
}

Segment text_segment(std::string text) { return Segment{"text", {{"text", std::move(text)}}}; }

namespace {

std::string escape(std::string_view text, bool comma) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '[': out += "&#91;"; break;
      case ']': out += "&#93;"; break;
      case ',':
        if (comma) {
          out += "&#44;";
          break;
        }
        [[fallthrough]];
      default: out += c;
    }
  }
  return out;
}

// Text joins the text segment before it, if any.
void append_plain(Segments& segments, std::string text) {
  if (text.empty()) return;
  if (!segments.empty() && segments.back().type == "text" && !segments.back().data.empty())
    segments.back().data.front().second += text;
  else
    segments.push_back(text_segment(std::move(text)));
}

void append_text(Segments& segments, std::string_view raw) {
  if (!raw.empty()) append_plain(segments, unescape(raw));
}

// Where the codes of a CQ string are, found in time linear in its length.
// A code holds no ']', so every "[CQ:" before the same ']' would end there;
// each search below (the next ']', ',', '=' or '&', the last malformed field
// before a ']') is done once and reused while its answer lies ahead. Searching
// afresh for each "[CQ:" made "[CQ:=" repeated to 1 MiB take minutes.
class CodeFinder {
 public:
  explicit CodeFinder(std::string_view text)
      : text_(text),
        close_(text.find(']')),
        comma_(text.find(',')),
        type_stop_(text.find_first_of("=&")) {}

  // The ']' that would end a code opened at `at`; npos when none follows.
  std::size_t close_after(std::size_t at) { return next(close_, at, "]"); }

  // Whether text_[from, close) is a code's inside: a type without '=' or '&',
  // then any number of ",key=value" with a non-empty key. `from` only grows
  // from one call to the next.
  bool is_code(std::size_t from, std::size_t close) {
    const auto type_end = std::min(next(comma_, from, ","), close);
    if (type_end == from || next(type_stop_, from, "=&") < type_end) return false;
    if (type_end == close) return true;
    const auto bad = last_malformed_field(from, close);
    return !bad || type_end > *bad;
  }

 private:
  // The first of `chars` at or after `from`, searched again only when the one
  // found before lies behind `from`.
  std::size_t next(std::size_t& found, std::size_t from, std::string_view chars) {
    if (found < from) found = text_.find_first_of(chars, from);
    return found;
  }

  // The ',' opening the last malformed field (no '=', or nothing before it) in
  // text_[from, close): a code whose fields start at or before it is not a
  // code. Found by the first caller for `close`, which has the smallest `from`.
  std::optional<std::size_t> last_malformed_field(std::size_t from, std::size_t close) {
    if (malformed_close_ == close) return malformed_;
    malformed_close_ = close;
    malformed_.reset();
    bool has_equals = false;
    for (std::size_t i = close; i-- > from;) {
      if (text_[i] == '=') {
        has_equals = true;
      } else if (text_[i] == ',') {
        if (!has_equals || text_[i + 1] == '=') {
          malformed_ = i;
          break;
        }
        has_equals = false;
      }
    }
    return malformed_;
  }

  std::string_view text_;
  std::size_t close_, comma_, type_stop_;
  std::size_t malformed_close_ = std::string_view::npos;
  std::optional<std::size_t> malformed_;
};

// One code's inside, between "[CQ:" and "]", as CodeFinder::is_code accepted it.
Segment read_code(std::string_view inside) {
  const auto comma = inside.find(',');
  Segment segment;
  segment.type = std::string(inside.substr(0, comma));
  if (comma == std::string_view::npos) return segment;
  // A key given twice keeps its first place and its last value, as in the
  // array form's objects; the index keeps a code with many keys linear.
  std::unordered_map<std::string_view, std::size_t> index;
  std::string_view rest = inside.substr(comma + 1);
  for (;;) {
    const auto next = rest.find(',');
    const auto piece = rest.substr(0, next);
    const auto equals = piece.find('=');
    const auto key = piece.substr(0, equals);
    auto value = unescape(piece.substr(equals + 1));
    const auto [place, added] = index.try_emplace(key, segment.data.size());
    if (added)
      segment.data.emplace_back(std::string(key), std::move(value));
    else
      segment.data[place->second].second = std::move(value);
    if (next == std::string_view::npos) break;
    rest.remove_prefix(next + 1);
  }
  return segment;
}

// A segment's data value as the spec writes it: a string. Numbers and
// booleans (some implementations send them) are written out.
std::optional<std::string> value_text(const json::value& value) {
  if (value.is_string()) return std::string(value.as_string());
  if (value.is_int64()) return std::to_string(value.as_int64());
  if (value.is_uint64()) return std::to_string(value.as_uint64());
  if (value.is_bool()) return std::string(value.as_bool() ? "true" : "false");
  if (value.is_double()) return fmt::format("{}", value.as_double());
  if (value.is_null()) return std::string();
  return std::nullopt;  // an object or an array (a forward node's content)
}

boost::system::result<Segment, std::string> parse_segment(const json::value& value) {
  using Result = boost::system::result<Segment, std::string>;
  const auto* object = value.if_object();
  if (!object) return Result(boost::system::in_place_error, "a segment must be an object");
  const auto* type = object->if_contains("type");
  if (!type || !type->is_string() || type->as_string().empty())
    return Result(boost::system::in_place_error, "a segment needs a \"type\" string");
  Segment segment;
  segment.type = std::string(type->as_string());
  if (const auto* data = object->if_contains("data"); data && !data->is_null()) {
    const auto* fields = data->if_object();
    if (!fields) return Result(boost::system::in_place_error, "a segment's \"data\" must be an object");
    for (const auto& field : *fields)
      if (auto text = value_text(field.value()))
        segment.data.emplace_back(std::string(field.key()), std::move(*text));
  }
  return segment;
}

// Length in bytes of the UTF-8 sequence at `at`: 1 for a byte that does not
// start a whole sequence (a stray or cut one), so a cut never loops and
// invalid bytes count one each.
std::size_t sequence_length(std::string_view text, std::size_t at) {
  const auto lead = static_cast<unsigned char>(text[at]);
  const std::size_t n = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  if (at + n > text.size()) return 1;
  for (std::size_t i = 1; i < n; ++i)
    if ((static_cast<unsigned char>(text[at + i]) & 0xC0) != 0x80) return 1;
  return n;
}

// The byte offset after `max_chars` code points of `text` (or its size).
std::size_t offset_of_chars(std::string_view text, std::size_t max_chars) {
  std::size_t offset = 0;
  for (std::size_t n = 0; n < max_chars && offset < text.size(); ++n)
    offset += sequence_length(text, offset);
  return offset;
}

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// Where to cut `window` (the most a piece may hold): after the last good
// break, or nullopt when there is none past its first quarter.
std::optional<std::size_t> best_cut(std::string_view window) {
  const std::size_t floor = window.size() / 4;
  const auto after_last = [&](std::string_view mark) -> std::optional<std::size_t> {
    const auto at = window.rfind(mark);
    if (at == std::string_view::npos || at + mark.size() <= floor) return std::nullopt;
    return at + mark.size();
  };
  if (auto cut = after_last("\n\n")) return cut;
  if (auto cut = after_last("\n")) return cut;
  std::optional<std::size_t> sentence;
  for (std::string_view end : {". ", "! ", "? ", "。", "！", "？", "; ", "；"}) {
    if (auto cut = after_last(end); cut && (!sentence || *cut > *sentence)) sentence = cut;
  }
  if (sentence) return sentence;
  if (auto cut = after_last(" ")) return cut;
  return std::nullopt;
}

}  // namespace

std::string escape_text(std::string_view text) { return escape(text, false); }
std::string escape_value(std::string_view text) { return escape(text, true); }

std::string unescape(std::string_view text) {
  static constexpr std::array<std::pair<std::string_view, char>, 4> entities{
      {{"&#91;", '['}, {"&#93;", ']'}, {"&#44;", ','}, {"&amp;", '&'}}};
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    bool replaced = false;
    if (text[i] == '&') {
      for (const auto& [entity, c] : entities) {
        if (text.substr(i, entity.size()) == entity) {
          out += c;
          i += entity.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += text[i++];
  }
  return out;
}

Segments parse_cq_string(std::string_view text) {
  Segments segments;
  CodeFinder finder(text);
  std::size_t plain_from = 0;
  std::size_t at = 0;
  while ((at = text.find("[CQ:", at)) != std::string_view::npos) {
    const auto close = finder.close_after(at);
    if (close == std::string_view::npos) break;
    if (!finder.is_code(at + 4, close)) {
      at += 4;  // not a code: it stays text
      continue;
    }
    auto code = read_code(text.substr(at + 4, close - at - 4));
    append_text(segments, text.substr(plain_from, at - plain_from));
    // A [CQ:text] code (with or without its text= value) is plain text.
    if (code.type == "text")
      append_plain(segments, std::string(code.get("text").value_or("")));
    else
      segments.push_back(std::move(code));
    at = plain_from = close + 1;
  }
  append_text(segments, text.substr(plain_from));
  return segments;
}

std::string to_cq_string(const Segments& segments) {
  std::string out;
  for (const auto& segment : segments) {
    if (segment.type == "text") {
      out += escape_text(segment.get("text").value_or(""));
      continue;
    }
    out += "[CQ:" + segment.type;
    for (const auto& [name, value] : segment.data) out += "," + name + "=" + escape_value(value);
    out += "]";
  }
  return out;
}

boost::system::result<Segments, std::string> parse_message(const json::value& message) {
  using Result = boost::system::result<Segments, std::string>;
  if (message.is_string()) return parse_cq_string(message.as_string());
  if (message.is_object()) {
    auto segment = parse_segment(message);
    if (!segment) return Result(boost::system::in_place_error, segment.error());
    return Segments{std::move(*segment)};
  }
  if (const auto* array = message.if_array()) {
    Segments segments;
    segments.reserve(array->size());
    for (const auto& element : *array) {
      auto segment = parse_segment(element);
      if (!segment) return Result(boost::system::in_place_error, segment.error());
      segments.push_back(std::move(*segment));
    }
    return segments;
  }
  return Result(boost::system::in_place_error,
                "a message must be a string, a segment or an array of segments");
}

json::array to_json(const Segments& segments) {
  json::array out;
  out.reserve(segments.size());
  for (const auto& segment : segments) {
    json::object data;
    for (const auto& [name, value] : segment.data) data[name] = value;
    out.push_back(json::object{{"type", segment.type}, {"data", std::move(data)}});
  }
  return out;
}

Incoming read_incoming(const Segments& segments, std::int64_t self_id) {
  Incoming in;
  const std::string self = std::to_string(self_id);
  for (const auto& segment : segments) {
    const auto& type = segment.type;
    if (type == "text") {
      in.text += segment.get("text").value_or("");
    } else if (type == "at") {
      const auto qq = segment.get("qq").value_or("");
      // @all (an announcement to the whole group) is not a question to the bot.
      if (qq == self) {
        in.mentions_self = true;
      } else if (qq == "all") {
        in.text += "@all";
      } else {
        in.text += "@" + std::string(segment.get("name").value_or(qq));
      }
    } else if (type == "reply") {
      if (auto id = segment.get("id")) in.replying_to = std::string(*id);
    } else if (type == "image") {
      // A received image has its URL in `url`; a sent one may name it in `file`.
      auto url = segment.get("url");
      const auto file = segment.get("file").value_or("");
      if (!url && (file.starts_with("http://") || file.starts_with("https://"))) url = file;
      if (url && !url->empty()) {
        in.images.emplace_back(*url);
      } else if (file.starts_with("base64://")) {
        in.images.push_back("data:image/png;base64," + std::string(file.substr(9)));
      } else {
        in.text += "[image]";
      }
    } else if (type == "face") {
      in.text += "[face]";
    } else if (type == "record") {
      in.text += "[voice message]";
    } else if (type == "video") {
      in.text += "[video]";
    } else if (type == "forward" || type == "node") {
      in.text += "[forwarded messages]";
    } else if (type == "share") {
      in.text += fmt::format("[link: {} {}]", segment.get("title").value_or(""),
                             segment.get("url").value_or(""));
    } else {
      in.text += "[" + type.substr(0, 32) + "]";
    }
  }
  return in;
}

namespace {
std::string trimmed(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return std::string(text);
}

bool is_ascii_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// `text` starts with `prefix` as a word: "/ai hello" and "/ai" do, "/aim" does
// not. A prefix that ends in another script ("小助手") may run on into the text.
bool starts_with_prefix(std::string_view text, std::string_view prefix) {
  if (prefix.empty() || !text.starts_with(prefix)) return false;
  return text.size() == prefix.size() || !is_ascii_word(prefix.back()) ||
         !is_ascii_word(text[prefix.size()]);
}
}  // namespace

std::optional<std::string> group_request(const Incoming& in, bool replies_to_bot,
                                         const std::vector<std::string>& prefixes) {
  const std::string text = trimmed(in.text);
  for (const auto& prefix : prefixes)
    if (starts_with_prefix(text, prefix))
      return trimmed(std::string_view(text).substr(prefix.size()));
  if (in.mentions_self || replies_to_bot) return text;
  return std::nullopt;
}

std::vector<std::string> split_reply(std::string_view text, std::size_t max_chars) {
  std::vector<std::string> pieces;
  max_chars = std::max<std::size_t>(max_chars, 1);
  while (!text.empty()) {
    const auto window_end = offset_of_chars(text, max_chars);
    if (window_end == text.size()) {
      pieces.emplace_back(text);
      break;
    }
    const auto window = text.substr(0, window_end);
    std::size_t cut = best_cut(window).value_or(window_end);
    auto piece = text.substr(0, cut);
    while (!piece.empty() && is_space(piece.back())) piece.remove_suffix(1);
    if (!piece.empty()) pieces.emplace_back(piece);
    text.remove_prefix(cut);
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  }
  return pieces;
}

}  // namespace mooring::chat::onebot
