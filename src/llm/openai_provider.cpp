#include "llm/openai_provider.hpp"

#include "llm/redact.hpp"
#include "llm/sse.hpp"
#include "llm/utf8.hpp"
#include "runtime/log.hpp"

#include <boost/json.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace mooring::llm {

namespace json = boost::json;
namespace http = boost::beast::http;
using Kind = ProviderError::Kind;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The provider's own words for an error, from {"error": {"message": ...}} or
// {"error": "..."} or {"message": ...}; empty if none.
std::string provider_message(const json::value& error) {
  if (error.is_string()) return std::string(error.as_string());
  if (!error.is_object()) return {};
  const auto& object = error.as_object();
  if (auto* message = object.if_contains("message"); message && message->is_string())
    return std::string(message->as_string());
  if (auto* inner = object.if_contains("error")) return provider_message(*inner);
  return {};
}

// Whether an error names a mistake of ours (key, request, model) that no
// retry will fix.
bool names_client_error(const json::value& error) {
  if (!error.is_object()) return false;
  std::string fields;
  for (const char* key : {"code", "type", "status"}) {
    if (auto* v = error.as_object().if_contains(key)) {
      if (v->is_string()) fields += lower(v->as_string()) + " ";
      if (v->is_int64()) fields += std::to_string(v->as_int64()) + " ";
    }
  }
  for (const char* marker : {"invalid_api_key", "invalid_request", "authentication", "permission",
                             "not_found", "model_not_found", "unauthorized", "400", "401", "403",
                             "404", "422", "context_length"})
    if (fields.find(marker) != std::string::npos) return true;
  return false;
}

json::value content_of(const ChatMessage& message) {
  if (message.images.empty()) return json::value(message.content.str());
  json::array parts;
  if (!message.content.empty()) parts.push_back({{"type", "text"}, {"text", message.content.str()}});
  for (const auto& image : message.images)
    parts.push_back({{"type", "image_url"}, {"image_url", {{"url", image}}}});
  return parts;
}

// What the upstream wrote, fit for a log line: valid UTF-8, secrets out, short.
std::string upstream_words(std::string_view raw, std::string_view api_key,
                           std::size_t max_bytes = 300) {
  return runtime::shorten(redact(repair_utf8(raw), api_key), max_bytes);
}

json::parse_options lenient_utf8() {
  json::parse_options options;
  options.allow_invalid_utf8 = true;  // repaired afterwards, not refused
  return options;
}

json::value parse_json(std::string_view text, error_code& ec) {
  // Boost.JSON 1.81 refuses a lone surrogate escape (a character cut between
  // two events by a server that streams UTF-16 code units): such escapes are
  // marked instead, for the reply's SurrogateJoiner to mend.
  if (const auto marked = mark_lone_surrogates(text))
    return json::parse(*marked, ec, json::storage_ptr(), lenient_utf8());
  return json::parse(text, ec, json::storage_ptr(), lenient_utf8());
}

ProviderError protocol_error(std::string detail) {
  return provider_error(Kind::protocol, unreadable_answer, std::move(detail), false);
}

}  // namespace

std::string truncation_notice(std::size_t max_reply_bytes) {
  return fmt::format("\n\n[the reply was cut here: it is longer than {} bytes]", max_reply_bytes);
}

ProviderError error_from_status(int status, std::string_view body,
                                std::optional<runtime::Duration> retry_after,
                                std::string_view api_key) {
  std::string said;
  error_code ec;
  auto parsed = parse_json(body, ec);
  if (!ec) said = provider_message(parsed);
  if (said.empty()) said = std::string(body);
  const std::string words = upstream_words(said, api_key);
  ProviderError error;
  error.kind = Kind::status;
  error.status = status;
  error.retry_after = retry_after;
  auto set = [&](Kind kind, bool retryable, std::string message, std::string_view hint = {}) {
    error.kind = kind;
    error.retryable = retryable;
    error.message = std::move(message);
    error.detail = fmt::format("{}{}{}", error.message, hint, words.empty() ? "" : ": " + words);
  };
  switch (status) {
    case 401:
      set(Kind::rejected, false, "the provider rejected the API key (401)");
      break;
    case 403:
      set(Kind::rejected, false, "the provider refused access (403)");
      break;
    case 404:
      set(Kind::rejected, false, "the provider has no such endpoint or model (404)",
          "; check provider.base_url and provider.model");
      break;
    case 408:
    case 409:
    case 429:
      set(Kind::status, true, fmt::format("the provider is busy ({})", status));
      break;
    default:
      if (status >= 500) {
        set(Kind::status, true, fmt::format("the provider failed ({})", status));
      } else if (status >= 400) {
        // 400, 413, 422...: this request's fault, not the provider's.
        set(Kind::rejected, false, fmt::format("the provider rejected the request ({})", status));
      } else {
        set(Kind::status, false, fmt::format("the provider answered {}, not 200", status));
      }
  }
  return error;
}

ProviderError error_from_stream_event(const json::value& error, std::string_view api_key) {
  const std::string said = provider_message(error);
  const bool client = names_client_error(error);
  const std::string words = said.empty() ? "no message" : upstream_words(said, api_key);
  if (client)
    return provider_error(Kind::rejected, "the provider rejected the request",
                      "the provider rejected the request in its stream: " + words, false);
  return provider_error(Kind::stream, "the provider reported an error",
                    "the provider reported a failure in its stream: " + words, true);
}

OpenAiProvider::OpenAiProvider(asio::any_io_executor executor, OpenAiOptions options,
                               net::ClientOptions client_options)
    : options_(std::move(options)) {
  if (!options_.reuse_connections) client_options.max_idle_per_origin = 0;
  client_ = std::make_unique<net::HttpClient>(std::move(executor), std::move(client_options));
  while (!options_.base_url.empty() && options_.base_url.back() == '/') options_.base_url.pop_back();
}

std::string OpenAiProvider::request_body(const ChatRequest& request) const {
  json::array messages;
  if (!request.system_prompt.empty())
    messages.push_back({{"role", "system"}, {"content", request.system_prompt}});
  for (const auto& message : request.history)
    messages.push_back({{"role", to_string(message.role)}, {"content", content_of(message)}});
  messages.push_back({{"role", "user"}, {"content", content_of(request.message)}});
  return json::serialize(json::object{
      {"model", options_.model}, {"stream", true}, {"messages", std::move(messages)}});
}

namespace {

// OpenAI's retry-after-ms: whole milliseconds, as the wait of Retry-After
// (at most a day); nullopt when it is not that.
std::optional<runtime::Duration> retry_after_ms(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty() || value.size() > 9 ||
      !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::min<runtime::Duration>(std::chrono::milliseconds(std::stol(std::string(value))),
                                     std::chrono::hours(24));
}

// One attempt's reading of the answer, as it streams in. Every handler
// returns false once reading further is pointless (a limit, a failure).
class AnswerReader {
 public:
  AnswerReader(const OpenAiOptions& options, const PieceSink& on_piece)
      : options_(options),
        on_piece_(on_piece),
        sse_(options.max_sse_line_bytes, options.max_sse_event_bytes) {}

  void head(const net::ClientResponse& head) {
    status_ = head.status;
    auto type = head.headers.find(http::field::content_type);
    event_stream_ = type != head.headers.end() &&
                    lower(type->value()).find("text/event-stream") != std::string::npos;
  }

  bool body(std::string_view bytes) {
    if (status_ != 200) {
      const auto room = options_.max_error_body_bytes - error_body_.size();
      error_body_.append(bytes.substr(0, room));
      return error_body_.size() < options_.max_error_body_bytes;
    }
    if (!event_stream_) {
      if (document_.size() + bytes.size() > options_.max_document_bytes) {
        failed_ = protocol_error(fmt::format("the provider's answer (not streamed) is over {} bytes",
                                             options_.max_document_bytes));
        return false;
      }
      document_.append(bytes);
      return true;
    }
    events_.clear();
    const auto parsed = sse_.feed(bytes, events_);
    for (const auto& event : events_)
      if (!on_event(event)) return false;
    if (parsed != SseParser::Status::ok) {
      failed_ = protocol_error(fmt::format(
          "the provider's stream has {} ({} bytes a line, {} an event)", to_string(parsed),
          options_.max_sse_line_bytes, options_.max_sse_event_bytes));
      return false;
    }
    return true;
  }

  // [DONE] or a finish_reason seen: the reply is whole.
  bool ended() const { return ended_; }

  // The outcome once the exchange is over (or stopped).
  CompletionResult finish(const boost::system::result<net::ClientResponse, net::ClientError>& sent) {
    if (truncated_) return CompletionResult(std::move(text_));
    if (failed_) return failure(std::move(*failed_));
    if (!sent && ended_ && !text_.empty()) {
      // The reply was whole at [DONE] or its finish_reason; what broke after
      // it (an endless trailer, a reset) costs only the connection.
      emit_rest();
      return CompletionResult(std::move(text_));
    }
    if (!sent) {
      const auto& error = sent.error();
      const auto words = upstream_words(error.message, options_.api_key);
      if (error.code == asio::error::operation_aborted) {
        // Where the request stood, when a slow DNS held it: the caller may
        // have cancelled it at its deadline, and then that is what to fix.
        std::string detail = error.lookup_unfinished ? words : std::string();
        return failure(provider_error(Kind::cancelled, "the request was cancelled",
                                      std::move(detail), false));
      }
      // Broken framing (a head, chunk line or trailer over the bound, a 101,
      // endless 1xx) and a compressed body nobody asked for are unreadable,
      // and would be again; a connection that ended early is not.
      const auto& http_errors = http::make_error_code(http::error::bad_status).category();
      const bool framing = error.code.category() == http_errors &&
                           error.code != http::error::partial_message &&
                           error.code != http::error::end_of_stream;
      if (framing) return failure(protocol_error(words));
      return failure(provider_error(Kind::network, "the connection to the provider failed", words, true));
    }
    if (status_ != 200) {
      std::optional<runtime::Duration> retry_after;
      if (auto it = sent->headers.find(http::field::retry_after); it != sent->headers.end())
        retry_after = net::parse_retry_after(it->value());
      // OpenAI's own, in milliseconds, where it says more than Retry-After.
      if (auto it = sent->headers.find("retry-after-ms"); it != sent->headers.end())
        if (const auto ms = retry_after_ms(it->value()); ms && (!retry_after || *ms > *retry_after))
          retry_after = ms;
      auto error = error_from_status(status_, error_body_, retry_after, options_.api_key);
      // A redirect is not followed (the key would go where it points): where
      // it points is what the operator needs, to put in provider.base_url.
      if (auto it = sent->headers.find(http::field::location);
          status_ >= 300 && status_ < 400 && it != sent->headers.end())
        error.detail += fmt::format(" (it points to {}: if that is the API's address, set "
                                    "provider.base_url to it)",
                                    upstream_words(it->value(), options_.api_key, 200));
      return failure(std::move(error));
    }
    if (!event_stream_) {
      if (auto refused = read_document()) return failure(std::move(*refused));
    } else {
      emit_rest();
    }
    if (truncated_) return CompletionResult(std::move(text_));
    if (text_.empty()) {
      // A filter that took the whole reply away is the provider declining
      // this message, not a fault of the provider's.
      if (ended_ && finish_reason_ == "content_filter")
        return failure(provider_error(Kind::rejected,
                                      "the provider declined to answer this message (its content "
                                      "filter); put it another way",
                                      "the reply was empty, its finish_reason content_filter",
                                      false));
      if (ended_)
        return failure(provider_error(Kind::protocol,
                                      "the provider sent an empty reply; send your message again",
                                      fmt::format("the provider returned an empty reply "
                                                  "(finish_reason \"{}\")",
                                                  finish_reason_),
                                      false));
      return failure(provider_error(Kind::cut_off, "the provider's answer was cut off; send your message again",
                                "the provider's stream ended without a reply", true));
    }
    if (!ended_)
      return failure(provider_error(
          Kind::cut_off, "the provider's answer was cut off; send your message again",
          fmt::format("the provider's stream ended after {} bytes of the reply without [DONE] "
                      "or a finish_reason",
                      text_.size()),
          true));
    return CompletionResult(std::move(text_));
  }

 private:
  // Streams `piece` out, unless the reply is full: then the part that fits
  // and the notice go out, and the reply is over.
  bool emit(std::string_view piece) {
    if (piece.empty()) return true;
    const auto room = options_.max_reply_bytes - text_.size();
    if (piece.size() <= room) {
      text_ += piece;
      if (on_piece_) on_piece_(piece);
      return true;
    }
    const auto fitting = utf8_prefix(piece, room);
    text_ += fitting;
    if (on_piece_ && !fitting.empty()) on_piece_(fitting);
    const auto notice = truncation_notice(options_.max_reply_bytes);
    text_ += notice;
    if (on_piece_) on_piece_(notice);
    truncated_ = true;
    return false;
  }

  // A piece of the reply's text as the upstream wrote it: mended, then out.
  bool emit_content(std::string_view content) {
    return emit(utf8_.feed(surrogates_.feed(content)));
  }

  // What mending still holds back, at the reply's end.
  void emit_rest() {
    if (emit(utf8_.feed(surrogates_.finish()))) emit(utf8_.finish());
  }

  bool on_event(const SseEvent& sse) {
    const auto& data = sse.data;
    if (ended_by_done_) return true;  // nothing counts after [DONE]
    if (data == "[DONE]") {
      ended_ = ended_by_done_ = true;
      return true;
    }
    error_code ec;
    const auto event = parse_json(data, ec);
    if (sse.type == "error") {
      // Whatever its shape: {"error": {...}}, the error object itself
      // ({"type": "overloaded_error", "message": ...}), or plain words.
      const auto* object = ec ? nullptr : event.if_object();
      const auto* inner = object ? object->if_contains("error") : nullptr;
      failed_ = error_from_stream_event(
          inner && !inner->is_null() ? *inner : object ? event : json::value(data),
          options_.api_key);
      return false;
    }
    const auto* object = ec ? nullptr : event.if_object();
    // After a finish_reason the reply is whole: what follows (usage, a
    // proxy's own trailer) cannot spoil it.
    if (!object && ended_) return true;
    if (!object) {
      failed_ = protocol_error("the provider sent an event that is not a JSON object: " +
                               upstream_words(data, options_.api_key, 200));
      return false;
    }
    if (auto* error = object->if_contains("error"); error && !error->is_null()) {
      failed_ = error_from_stream_event(*error, options_.api_key);
      return false;
    }
    const auto* choices = object->if_contains("choices");
    if (!choices || choices->is_null()) return true;  // usage-only and keep-alive events
    const auto* list = choices->if_array();
    if (!list) return shape_error("\"choices\" is not an array");
    if (list->empty()) return true;
    const auto* choice = (*list)[0].if_object();
    if (!choice) return shape_error("a choice is not an object");
    if (auto* reason = choice->if_contains("finish_reason"); reason && reason->is_string()) {
      ended_ = ended_ || !reason->get_string().empty();
      if (!reason->get_string().empty() && finish_reason_.empty())
        finish_reason_ = runtime::shorten(reason->get_string(), 64);
    }
    const auto* delta = choice->if_contains("delta");
    if (!delta || delta->is_null()) return true;
    if (!delta->is_object()) return shape_error("\"delta\" is not an object");
    const auto* content = delta->get_object().if_contains("content");
    if (!content || content->is_null() || (content->is_string() && content->get_string().empty())) {
      // A step of the answer with no text for the user (reasoning_content,
      // a tool call's delta): the provider is at work, which an empty piece
      // says (ResilientProvider: the attempt's idle time starts again).
      if (on_piece_ && !delta->get_object().empty()) on_piece_({});
      return true;
    }
    if (!content->is_string()) return shape_error("\"delta.content\" is not a string");
    return emit_content(content->get_string());
  }

  bool shape_error(std::string_view what) {
    failed_ = protocol_error(fmt::format("the provider sent an event where {}", what));
    return false;
  }

  // A server that ignored "stream": one JSON document. nullopt when it held a reply.
  std::optional<ProviderError> read_document() {
    error_code ec;
    const auto document = parse_json(document_, ec);
    const auto* object = ec ? nullptr : document.if_object();
    if (!object)
      return protocol_error("the provider's answer is not a JSON object: " +
                            upstream_words(document_, options_.api_key, 200));
    if (auto* error = object->if_contains("error"); error && !error->is_null())
      return error_from_stream_event(*error, options_.api_key);
    const auto* choices = object->if_contains("choices");
    const auto* list = choices ? choices->if_array() : nullptr;
    if (!list || list->empty())
      return protocol_error("the provider's answer has no \"choices\" array");
    const auto* choice = (*list)[0].if_object();
    if (!choice) return protocol_error("the provider's answer has a choice that is not an object");
    const auto* message = choice->if_contains("message");
    if (!message || !message->is_object())
      return protocol_error("the provider's answer has no \"message\" object");
    const auto* content = message->get_object().if_contains("content");
    if (content && !content->is_null() && !content->is_string())
      return protocol_error("the provider's answer has a \"content\" that is not a string");
    ended_ = true;  // a whole document is a complete answer
    if (auto* reason = choice->if_contains("finish_reason"); reason && reason->is_string())
      finish_reason_ = runtime::shorten(reason->get_string(), 64);
    if (content && content->is_string() && emit_content(content->get_string())) emit_rest();
    return std::nullopt;
  }

  const OpenAiOptions& options_;
  const PieceSink& on_piece_;
  SseParser sse_;
  std::vector<SseEvent> events_;
  SurrogateJoiner surrogates_;  // then utf8_: a reply's text passes through both
  Utf8Repairer utf8_;
  int status_ = 0;
  bool event_stream_ = false;
  std::string error_body_;  // a non-200 body, bounded
  std::string document_;    // a 200 answered without streaming, bounded
  std::string text_;
  std::optional<ProviderError> failed_;
  bool ended_ = false;          // [DONE] or a finish_reason seen
  std::string finish_reason_;   // the first one seen, shortened
  bool ended_by_done_ = false;
  bool truncated_ = false;
};

}  // namespace

awaitable<CompletionResult> OpenAiProvider::complete(const ChatRequest& request,
                                                     PieceSink on_piece) {
  net::ClientRequest http_request;
  http_request.method = http::verb::post;
  http_request.url = options_.base_url + "/chat/completions";
  http_request.headers = {{"Content-Type", "application/json"},
                          {"Accept", "text/event-stream"}};
  if (!options_.api_key.empty())
    http_request.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
  http_request.body = request_body(request);
  log::debug("openai: POST {} {}", http_request.url, elide(http_request.body));

  AnswerReader reader(options_, on_piece);
  // After [DONE] or a finish_reason only the end of the body is missing (and
  // perhaps a usage event, [DONE]): an upstream that keeps the connection
  // open past it costs the connection, not the reply.
  http_request.sink_has_all = [&reader] { return reader.ended(); };
  auto sent = co_await client_->send(
      std::move(http_request), [&](const net::ClientResponse& head) { reader.head(head); },
      [&](std::string_view bytes) { return reader.body(bytes); });
  co_return reader.finish(sent);
}

}  // namespace mooring::llm
