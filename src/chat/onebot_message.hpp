// OneBot v11 messages as values: the two wire forms (a CQ-code string, an
// array of segments) read into one list of segments and written back, and a
// segment list turned into what a conversation stores (text and images).
//
// Promises:
// - parse_cq_string never fails: any text is read, a malformed code stays
//   text; to_cq_string(parse_cq_string(s)) == s for every s escaped as the
//   spec says.
// - Escaping follows the spec: & [ ] outside codes, & [ ] , inside values;
//   `&` is escaped first and unescaped last.
// - Nothing here throws on input a OneBot implementation sends; a message
//   that is neither a string, a segment nor an array of segments is an error
//   value.
#pragma once

#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mooring::chat::onebot {

struct Segment {
  std::string type;  // "text", "at", "image", ...
  std::vector<std::pair<std::string, std::string>> data;  // in the order written

  // The value of `key`, or nullopt.
  std::optional<std::string_view> get(std::string_view key) const;
  friend bool operator==(const Segment&, const Segment&) = default;
};

using Segments = std::vector<Segment>;

Segment text_segment(std::string text);

std::string escape_text(std::string_view text);   // & [ ]
std::string escape_value(std::string_view text);  // & [ ] ,
std::string unescape(std::string_view text);

// "[CQ:face,id=178]hi" -> {face id=178}, {text "hi"}.
Segments parse_cq_string(std::string_view text);
std::string to_cq_string(const Segments& segments);

// A message field as events carry it: a CQ string, one segment object, or an
// array of segments (values given as strings, numbers or booleans).
boost::system::result<Segments, std::string> parse_message(const boost::json::value& message);
// The array form, which mooring always sends.
boost::json::array to_json(const Segments& segments);

// What a conversation keeps of a message: its text (with readable
// placeholders for what is not text: "[face]", "[voice message]", "@123"),
// its images (URLs or data: URLs), and how it addressed the bot.
struct Incoming {
  std::string text;
  std::vector<std::string> images;
  bool mentions_self = false;             // an at segment naming the bot (or all)
  std::optional<std::string> replying_to;  // the message id a reply segment names
};
Incoming read_incoming(const Segments& segments, std::int64_t self_id);

// Whether a group message is for the bot, and its text with the trigger
// removed: it @-mentions the bot, replies to one of the bot's messages, or its
// text starts with one of `prefixes` ("/ai hello" -> "hello"). nullopt: keep
// it as context, do not answer.
std::optional<std::string> group_request(const Incoming& in, bool replies_to_bot,
                                         const std::vector<std::string>& prefixes);

// Splits a reply into messages of at most `max_chars` characters (code
// points), cutting at a paragraph break, else a line break, else the end of a
// sentence, else a space, else anywhere between code points. Pieces keep
// every character; only the whitespace at a cut is dropped.
std::vector<std::string> split_reply(std::string_view text, std::size_t max_chars);

}  // namespace mooring::chat::onebot
