// The host's configuration: an immutable snapshot parsed and validated from TOML.
// A Config that exists is valid: parse_config either returns one or lists every
// problem with the key and the line it was found on. Its tokens can be sent in
// an HTTP header: printable ASCII, no space at either end.
#pragma once

#include "net/listen_address.hpp"
#include "runtime/duration.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mooring::app {

using runtime::Duration;
using namespace std::chrono_literals;

struct DataConfig {
  std::string dir = "mooring-data";
  // "full": an acknowledged message survives a power cut or an OS crash;
  // "normal": it survives a crash or kill -9 of mooring (WAL, fsync at checkpoints).
  std::string synchronous = "full";
  friend bool operator==(const DataConfig&, const DataConfig&) = default;
};

struct GatewayConfig {
  net::ListenAddress listen{"127.0.0.1", 8080};
  // "none": anyone who reaches the gateway may be any user (loopback only,
  // unless allow_anonymous); "token": one shared token; "signed": per-user
  // HS256 tokens whose `sub` is the user id, checked with the key in the
  // environment variable signing_key_env.
  std::string auth = "none";
  std::string token;
  std::string signing_key_env = "MOORING_GATEWAY_KEY";
  bool allow_anonymous = false;  // also lets OneBot run there without access_token
  // Origins of browser pages on other hosts allowed to open /ws/<user>
  // ("https://chat.example"; "*": any). Pages of the gateway's own host are.
  std::vector<std::string> allowed_origins;
  Duration heartbeat_interval = 20s;
  Duration heartbeat_timeout = 10s;
  std::uint64_t max_message_bytes = 1048576;
  std::uint64_t max_buffered_bytes = 268435456;  // across all connections (net::BufferBudget)
  std::uint64_t send_queue_limit = 256;
  std::uint64_t max_connections = 10000;
  std::uint64_t max_pending_messages = 16;
  std::uint64_t max_messages_per_minute = 60;
  friend bool operator==(const GatewayConfig&, const GatewayConfig&) = default;
};

struct AdminConfig {
  net::ListenAddress listen{"127.0.0.1", 8081};
  std::string token;  // empty: generated into <data.dir>/admin.token
  // Names the admin API answers to besides IP addresses and localhost.
  std::vector<std::string> allowed_hosts;
  friend bool operator==(const AdminConfig&, const AdminConfig&) = default;
};

struct EchoConfig {
  Duration token_delay = 0ms;
  friend bool operator==(const EchoConfig&, const EchoConfig&) = default;
};

struct ProviderConfig {
  std::string kind = "echo";  // "echo" or "openai"
  std::string base_url;
  std::string api_key_env = "OPENAI_API_KEY";
  std::string model;
  std::string system_prompt;
  Duration attempt_timeout = 60s;
  Duration total_timeout = 180s;
  std::uint64_t max_attempts = 4;
  Duration backoff_initial = 500ms;
  Duration backoff_max = 20s;
  std::uint64_t max_concurrency = 8;
  std::uint64_t max_waiting = 64;
  std::uint64_t max_reply_bytes = 1048576;
  EchoConfig echo;
  friend bool operator==(const ProviderConfig&, const ProviderConfig&) = default;
};

struct ChatConfig {
  std::uint64_t history_messages = 20;
  std::uint64_t max_context_bytes = 262144;
  friend bool operator==(const ChatConfig&, const ChatConfig&) = default;
};

struct OneBotConfig {
  bool enabled = false;
  std::string path = "/onebot/v11/ws";
  // Empty: no check; refused with the gateway on an address other machines
  // can reach, unless gateway.allow_anonymous.
  std::string access_token;
  std::vector<std::int64_t> self_ids;  // empty: any
  std::vector<std::string> group_prefixes{"/ai"};
  Duration api_timeout = 30s;
  std::uint64_t max_message_chars = 4500;
  Duration send_interval = 1s;
  friend bool operator==(const OneBotConfig&, const OneBotConfig&) = default;
};

struct ShutdownConfig {
  Duration drain_timeout = 5s;
  friend bool operator==(const ShutdownConfig&, const ShutdownConfig&) = default;
};

struct LogConfig {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  std::uint64_t max_field_bytes = 512;
  friend bool operator==(const LogConfig&, const LogConfig&) = default;
};

struct Config {
  DataConfig data;
  GatewayConfig gateway;
  AdminConfig admin;
  ProviderConfig provider;
  ChatConfig chat;
  OneBotConfig onebot;
  ShutdownConfig shutdown;
  LogConfig log;
  friend bool operator==(const Config&, const Config&) = default;
};

using ConfigPtr = std::shared_ptr<const Config>;

// One problem in a configuration text. `line` is 0 when the problem has no
// position (for example a cross-key rule).
struct ConfigError {
  std::string key;  // dotted: "gateway.listen"
  int line = 0;
  std::string message;

  // "<source>:<line>: gateway.listen: "nowhere" is not a valid address: ..."
  std::string describe(std::string_view source) const;
};

using ConfigResult = std::variant<ConfigPtr, std::vector<ConfigError>>;

// Parses and validates a whole TOML text. Every unknown key, wrong type or bad
// value is reported, not only the first.
ConfigResult parse_config(std::string_view toml_text);

// Reads a configuration file (at most 1 MiB), or says why it cannot. A path
// that is not a regular file (a FIFO put in the file's place) is read for
// `wait` at most: its reading thread is never held for longer.
std::variant<std::string, ConfigError> read_config_text(
    const std::string& path, std::chrono::milliseconds wait = std::chrono::seconds(5));

// Reads a file and parses it. A file that cannot be read is one ConfigError
// with an empty key.
ConfigResult load_config_file(const std::string& path);

// Why applying `after` over `before` on a running host would weaken access
// (a gateway losing its token or signature check, an admin token dropped to
// the generated one, anonymous access allowed, OneBot losing its access_token,
// opened without one to other machines, or losing its self_ids there): one
// sentence per reason; empty when it does not. A hot reload refuses such a
// change: it needs a restart.
std::vector<std::string> weakened_access(const Config& before, const Config& after);

// The tokens set in the configuration that are short enough to guess
// (admin.token, gateway.token, onebot.access_token under 16 characters, the
// least a token file may hold): a sentence each, saying what to use instead.
std::vector<std::string> guessable_tokens(const Config& config);

// The dotted keys whose values differ between two configurations, in file
// order ("gateway.listen", "log.level"). Values are not listed: some are secrets.
std::vector<std::string> changed_keys(const Config& before, const Config& after);

// The built-in defaults (what `serve` uses without a file).
ConfigPtr default_config();

// A commented TOML text listing every key with its default value;
// parse_config accepts it and yields default_config().
std::string default_config_toml();

}  // namespace mooring::app
