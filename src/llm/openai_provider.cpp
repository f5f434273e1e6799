#include "llm/openai_provider.hpp"

#include "llm/sse.hpp"
#include "runtime/log.hpp"

#include <boost/json.hpp>

#include <fmt/format.h>

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
  if (message.images.empty()) return json::value(message.content);
  json::array parts;
  if (!message.content.empty()) parts.push_back({{"type", "text"}, {"text", message.content}});
  for (const auto& image : message.images)
    parts.push_back({{"type", "image_url"}, {"image_url", {{"url", image}}}});
  return parts;
}

}  // namespace

ProviderError error_from_status(int status, std::string_view body,
                                std::optional<runtime::Duration> retry_after) {
  std::string said;
  error_code ec;
  auto parsed = json::parse(body, ec);
  if (!ec) said = provider_message(parsed);
  const std::string detail = said.empty() ? "" : ": " + runtime::shorten(said, 300);
  ProviderError error{Kind::status, status, retry_after, false, {}};
  switch (status) {
    case 401:
      error.kind = Kind::rejected;
      error.message = fmt::format("the provider rejected the API key ({}){}", status, detail);
      break;
    case 403:
      error.kind = Kind::rejected;
      error.message = fmt::format("the provider refused access ({}){}", status, detail);
      break;
    case 404:
      error.kind = Kind::rejected;
      error.message = fmt::format(
          "the provider has no such endpoint or model ({}); check provider.base_url and "
          "provider.model{}",
          status, detail);
      break;
    case 400:
    case 422:
      error.kind = Kind::rejected;
      error.message = fmt::format("the provider rejected the request ({}){}", status, detail);
      break;
    case 408:
    case 409:
    case 429:
      error.retryable = true;
      error.message = fmt::format("the provider is busy ({}){}", status, detail);
      break;
    default:
      error.retryable = status >= 500;
      error.message = status >= 500
                          ? fmt::format("the provider failed ({}){}", status, detail)
                          : fmt::format("the provider answered {}{}", status, detail);
  }
  return error;
}

ProviderError error_from_stream_event(const json::value& error) {
  const std::string said = provider_message(error);
  const bool client = names_client_error(error);
  return ProviderError{client ? Kind::rejected : Kind::stream, 0, std::nullopt, !client,
                       fmt::format("the provider reported an error in its stream: {}",
                                   said.empty() ? "no message" : runtime::shorten(said, 300))};
}

OpenAiProvider::OpenAiProvider(asio::any_io_executor executor, OpenAiOptions options,
                               net::ClientOptions client_options)
    : options_(std::move(options)),
      client_(std::make_unique<net::HttpClient>(std::move(executor), std::move(client_options))) {
  while (!options_.base_url.empty() && options_.base_url.back() == '/') options_.base_url.pop_back();
}

std::string OpenAiProvider::request_body(const ChatRequest& request) const {
  json::array messages;
  if (!request.system_prompt.empty())
    messages.push_back({{"role", "system"}, {"content", request.system_prompt}});
  for (const auto& message : request.history)
    messages.push_back({{"role", message.role}, {"content", content_of(message)}});
  messages.push_back({{"role", "user"}, {"content", content_of(request.message)}});
  return json::serialize(json::object{
      {"model", options_.model}, {"stream", true}, {"messages", std::move(messages)}});
}

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

  // What the response says, gathered as it streams in.
  int status = 0;
  bool event_stream = false;
  std::string error_body;   // a non-200 body, bounded
  std::string plain_body;   // a 200 answered without streaming, bounded
  std::string text;
  std::optional<ProviderError> stream_error;
  bool done = false;
  SseParser parser;
  std::vector<std::string> events;

  auto on_event = [&](const std::string& data) {
    if (data == "[DONE]") {
      done = true;
      return;
    }
    error_code ec;
    auto event = json::parse(data, ec);
    if (ec || !event.is_object()) {
      stream_error = ProviderError{Kind::stream, 0, {}, true,
                                   "the provider sent an event that is not JSON: " +
                                       runtime::shorten(data, 200)};
      return;
    }
    const auto& object = event.as_object();
    if (auto* error = object.if_contains("error"); error && !error->is_null()) {
      stream_error = error_from_stream_event(*error);
      return;
    }
    auto* choices = object.if_contains("choices");
    if (!choices || !choices->is_array() || choices->as_array().empty()) return;
    const auto& choice = choices->as_array()[0];
    if (!choice.is_object()) return;
    if (auto* delta = choice.as_object().if_contains("delta"); delta && delta->is_object()) {
      if (auto* content = delta->as_object().if_contains("content"); content && content->is_string()) {
        std::string_view piece = content->as_string();
        if (!piece.empty()) {
          text += piece;
          if (on_piece) on_piece(piece);
        }
      }
    }
  };

  auto result = co_await client_->send(
      std::move(http_request),
      [&](const net::ClientResponse& head) {
        status = head.status;
        auto type = head.headers.find(http::field::content_type);
        event_stream = type != head.headers.end() &&
                       lower(type->value()).find("text/event-stream") != std::string::npos;
      },
      [&](std::string_view bytes) {
        if (stream_error) return;
        if (status != 200) {
          if (error_body.size() < options_.max_error_body_bytes)
            error_body.append(bytes.substr(0, options_.max_error_body_bytes - error_body.size()));
          return;
        }
        if (!event_stream) {
          if (plain_body.size() < 16 * 1024 * 1024) plain_body.append(bytes);
          return;
        }
        events.clear();
        if (!parser.feed(bytes, events)) {
          stream_error = ProviderError{Kind::stream, 0, {}, true, "the provider sent an over-long line"};
          return;
        }
        for (const auto& event : events) {
          on_event(event);
          if (stream_error) return;
        }
      });

  if (stream_error) co_return failure(*stream_error);
  if (!result) {
    const auto& error = result.error();
    if (error.code == asio::error::operation_aborted)
      co_return failure({Kind::cancelled, 0, {}, false, "the request was cancelled"});
    co_return failure({Kind::network, 0, {}, true, error.message});
  }
  if (status != 200) {
    std::optional<runtime::Duration> retry_after;
    if (auto it = result->headers.find(http::field::retry_after); it != result->headers.end())
      retry_after = net::parse_retry_after(it->value());
    co_return failure(error_from_status(status, error_body, retry_after));
  }
  if (!event_stream) {
    // A server that ignored "stream": one JSON document.
    error_code ec;
    auto document = json::parse(plain_body, ec);
    if (!ec && document.is_object()) {
      const auto& object = document.as_object();
      if (auto* error = object.if_contains("error"); error && !error->is_null())
        co_return failure(error_from_stream_event(*error));
      if (auto* choices = object.if_contains("choices");
          choices && choices->is_array() && !choices->as_array().empty()) {
        const auto* message = choices->as_array()[0].as_object().if_contains("message");
        if (message && message->is_object()) {
          if (auto* content = message->as_object().if_contains("content");
              content && content->is_string()) {
            text = std::string(content->as_string());
            if (on_piece && !text.empty()) on_piece(text);
          }
        }
      }
    }
  }
  if (text.empty())
    co_return failure({Kind::stream, 0, {}, !done,
                       done ? "the provider returned an empty reply"
                            : "the provider's stream ended without a reply"});
  co_return CompletionResult(std::move(text));
}

}  // namespace mooring::llm
