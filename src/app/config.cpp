#include "app/config.hpp"

#include "net/http.hpp"
#include "runtime/log.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <set>
#include <span>
#include <system_error>

namespace mooring::app {
namespace {

constexpr std::uint64_t mib = std::uint64_t{1024} * 1024;
// A configuration file is a few kilobytes; the cap keeps `-c /dev/zero` from
// eating memory.
constexpr std::size_t max_file_bytes = mib;
// Deadlines add durations to steady_clock's nanosecond time points; a cap far
// below that range keeps every configured duration safe to add, and no timeout
// here has a reason to be longer.
constexpr Duration max_duration = std::chrono::hours(24);

constexpr std::string_view provider_kinds[] = {"echo", "openai"};
constexpr std::string_view auth_modes[] = {"none", "token", "signed"};
constexpr std::string_view sync_modes[] = {"full", "normal"};
// toml++ parses nested keys, tables and arrays recursively: a text nested
// thousands of levels deep overflows the stack. Nothing in a configuration
// needs more than a few levels.
constexpr std::size_t max_nesting = 32;
constexpr std::string_view log_levels[] = {"trace", "debug",    "info", "warn",
                                           "error", "critical", "off"};

int line_of(const toml::source_region& region) {
  return static_cast<int>(region.begin.line);
}

std::string_view type_phrase(toml::node_type type) {
  switch (type) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string join(std::span<const std::string_view> words) {
  std::string out;
  for (auto word : words) {
    if (!out.empty()) out += ", ";
    out += word;
  }
  return out;
}

// Levenshtein distance, for "did you mean" hints on misspelt keys.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Every problem found so far, and which keys had one: a rule that relates two
// keys is not checked when either of them was already reported, because its
// value would be the default and the message would be about the wrong thing.
class Problems {
 public:
  void add(std::string key, int line, std::string message) {
    failed_.insert(key);
    list_.push_back(ConfigError{std::move(key), line, std::move(message)});
  }
  bool failed(const std::string& key) const { return failed_.count(key) != 0; }

  // In file order, so the list reads top to bottom; problems without a
  // position come last. At most max_listed, then how many more there are: a
  // file of a megabyte of unknown keys is not 60,000 lines in the log.
  static constexpr std::size_t max_listed = 100;
  std::vector<ConfigError> take() {
    std::stable_sort(list_.begin(), list_.end(), [](const ConfigError& a, const ConfigError& b) {
      const auto rank = [](int line) { return line == 0 ? std::numeric_limits<int>::max() : line; };
      return rank(a.line) < rank(b.line);
    });
    if (list_.size() > max_listed) {
      const auto more = list_.size() - max_listed;
      list_.resize(max_listed);
      list_.push_back(ConfigError{"", 0,
                                  fmt::format("… and {} more problems (the first {} are listed); "
                                              "mend these and check again",
                                              more, max_listed)});
    }
    return std::move(list_);
  }

 private:
  std::vector<ConfigError> list_;
  std::set<std::string> failed_;
};

// Reads one TOML table into a configuration section. Each read names a key
// the section knows; report_unknown_keys() then reports every key nobody asked
// for, so a typo is an error instead of a setting silently left at its default.
// A section that is absent from the file has no table, and every read leaves
// the default in place.
class Section {
 public:
  Section(Problems& problems, const toml::table* table, std::string name)
      : problems_(problems), table_(table), name_(std::move(name)) {}

  std::string dotted(std::string_view key) const {
    return name_.empty() ? std::string(key) : name_ + "." + std::string(key);
  }

  // The line `key` was written on, or 0 when the file does not set it.
  int line(std::string_view key) const {
    if (table_ == nullptr) return 0;
    const auto found = table_->find(key);
    return found == table_->end() ? 0 : line_of(found->first.source());
  }

  bool failed(std::string_view key) const { return problems_.failed(dotted(key)); }

  void fail(std::string_view key, std::string message) {
    fail_at(key, line(key), std::move(message));
  }

  void fail_at(std::string_view key, int at_line, std::string message) {
    problems_.add(dotted(key), at_line, std::move(message));
  }

  // Reports `message` against `key` unless `ok`, or unless the key already has
  // a problem of its own.
  void check(std::string_view key, bool ok, std::string message) {
    if (!ok && !failed(key)) fail(key, std::move(message));
  }

  Section section(std::string_view key) {
    const toml::node* node = find(key);
    if (node == nullptr) return Section(problems_, nullptr, dotted(key));
    const toml::table* table = node->as_table();
    if (table == nullptr) wrong_type(key, "a table", *node);
    return Section(problems_, table, dotted(key));
  }

  void read(std::string_view key, std::string& out) {
    if (const toml::node* node = find(key)) {
      if (auto value = node->value_exact<std::string>()) {
        out = *value;
      } else {
        wrong_type(key, "a string", *node);
      }
    }
  }

  void read(std::string_view key, bool& out) {
    if (const toml::node* node = find(key)) {
      if (auto value = node->value_exact<bool>()) {
        out = *value;
      } else {
        wrong_type(key, "a boolean (true or false)", *node);
      }
    }
  }

  void read(std::string_view key, std::uint64_t& out, std::uint64_t min, std::uint64_t max) {
    const toml::node* node = find(key);
    if (node == nullptr) return;
    const auto value = node->value_exact<std::int64_t>();
    if (!value) return wrong_type(key, "an integer", *node);
    if (*value < 0 || static_cast<std::uint64_t>(*value) < min ||
        static_cast<std::uint64_t>(*value) > max) {
      return fail(key, fmt::format("must be from {} to {}, not {}", min, max, *value));
    }
    out = static_cast<std::uint64_t>(*value);
  }

  void read(std::string_view key, Duration& out) {
    const toml::node* node = find(key);
    if (node == nullptr) return;
    const auto text = node->value_exact<std::string>();
    if (!text) return wrong_type(key, "a duration string such as \"5s\"", *node);
    const auto duration = runtime::parse_duration(*text);
    if (!duration) {
      return fail(key, fmt::format("\"{}\" is not a duration (use e.g. \"250ms\", \"5s\", \"10m\")",
                                   *text));
    }
    if (*duration > max_duration) {
      return fail(key, fmt::format("\"{}\" is too long (at most {})", *text,
                                   runtime::format_duration(max_duration)));
    }
    out = *duration;
  }

  void read(std::string_view key, net::ListenAddress& out) {
    const toml::node* node = find(key);
    if (node == nullptr) return;
    const auto text = node->value_exact<std::string>();
    if (!text) return wrong_type(key, "an address string such as \"127.0.0.1:8080\"", *node);
    std::string error;
    auto address = net::parse_listen_address(*text, error);
    if (!address) return fail(key, fmt::format("\"{}\" is not a valid address: {}", *text, error));
    out = std::move(*address);
  }

  void read(std::string_view key, std::vector<std::string>& out) {
    const toml::node* node = find(key);
    if (node == nullptr) return;
    const toml::array* array = node->as_array();
    if (array == nullptr) return wrong_type(key, "an array of strings", *node);
    std::vector<std::string> values;
    for (const auto& element : *array) {
      auto value = element.value_exact<std::string>();
      if (!value) return wrong_type(key, "an array of strings", *node);
      values.push_back(std::move(*value));
    }
    out = std::move(values);
  }

  void read(std::string_view key, std::vector<std::int64_t>& out) {
    const toml::node* node = find(key);
    if (node == nullptr) return;
    const toml::array* array = node->as_array();
    if (array == nullptr) return wrong_type(key, "an array of integers", *node);
    std::vector<std::int64_t> values;
    for (const auto& element : *array) {
      auto value = element.value_exact<std::int64_t>();
      if (!value) return wrong_type(key, "an array of integers", *node);
      values.push_back(*value);
    }
    out = std::move(values);
  }

  void read_choice(std::string_view key, std::string& out,
                   std::span<const std::string_view> choices) {
    std::string value = out;
    read(key, value);
    if (failed(key)) return;
    if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
      return fail(key, fmt::format("\"{}\" is not one of: {}", value, join(choices)));
    }
    out = std::move(value);
  }

  void report_unknown_keys() {
    if (table_ == nullptr) return;
    for (auto&& [key, node] : *table_) {
      if (known_.contains(key.str())) continue;
      std::string message = "unknown key";
      if (auto hint = closest_known(key.str()))
        message += fmt::format(" (did you mean \"{}\"?)", *hint);
      problems_.add(dotted(key.str()), line_of(key.source()), std::move(message));
    }
  }

 private:
  // Marks `key` as one this section knows, and returns its node if it is set.
  const toml::node* find(std::string_view key) {
    known_.emplace(key);
    return table_ == nullptr ? nullptr : table_->get(key);
  }

  void wrong_type(std::string_view key, std::string_view expected, const toml::node& node) {
    fail(key, fmt::format("expected {}, got {}", expected, type_phrase(node.type())));
  }

  std::optional<std::string> closest_known(std::string_view key) const {
    std::optional<std::string> best;
    std::size_t best_distance = 3;  // more than two edits is a different word, not a typo
    for (const auto& candidate : known_) {
      const auto distance = edit_distance(key, candidate);
      if (distance < best_distance) {
        best_distance = distance;
        best = candidate;
      }
    }
    return best;
  }

  Problems& problems_;
  const toml::table* table_;
  std::string name_;
  std::set<std::string, std::less<>> known_;
};

bool is_http_url(const std::string& text) {
  auto url = boost::urls::parse_uri(text);
  return url && (url->scheme() == "http" || url->scheme() == "https") && url->has_authority() &&
         !url->host().empty();
}

// "127.0.0.1", "::1" and "localhost": reachable from this machine only.
bool is_loopback(const net::ListenAddress& address) {
  return address.host == "localhost" || address.host == "::1" || address.host.starts_with("127.");
}

// Whether two listeners would want one socket: the same port, and hosts
// that meet (the same, a wildcard, or "localhost" beside a loopback address).
bool overlap(const net::ListenAddress& a, const net::ListenAddress& b) {
  if (a.port != b.port) return false;
  const auto wildcard = [](const net::ListenAddress& x) {
    return x.host == "0.0.0.0" || x.host == "::" || x.host.empty();
  };
  return a.host == b.host || wildcard(a) || wildcard(b) ||
         (is_loopback(a) && is_loopback(b) && (a.host == "localhost" || b.host == "localhost"));
}

// The name of an environment variable that holds a credential: upper-case
// letters, digits and underscores, ending in _KEY, _TOKEN or _SECRET. Any
// other variable (PATH, HOME) would be sent to base_url as a bearer token.
bool is_credential_variable(std::string_view name) {
  if (name.empty() || !(name.front() >= 'A' && name.front() <= 'Z')) return false;
  for (char c : name)
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return name.ends_with("_KEY") || name.ends_with("_TOKEN") || name.ends_with("_SECRET");
}


// Reports a token that is set but that no client could present.
void check_token(Section& s, std::string_view key, const std::string& token) {
  if (token.empty()) return;
  if (auto problem = net::unpresentable_token(token)) s.check(key, false, std::move(*problem));
}

// OneBot on the gateway's address without an access_token admits any bridge:
// it may connect as any bot account, read the replies to that account's
// conversations and speak for it.
bool onebot_open_to_others(const Config& c) {
  return c.onebot.enabled && c.onebot.access_token.empty() && !is_loopback(c.gateway.listen);
}

// What the text must not hold before toml++ sees it, found without parsing:
// nesting deeper than `limit` (brackets and braces outside strings and
// comments, the dots of one line's key), which overflows toml++'s recursion,
// and a non-ASCII character outside strings and comments, which TOML never
// allows there and which sends toml++ 3.3 into undefined behaviour (its
// whitespace table reaches an "unreachable" branch). A UTF-8 byte order mark
// opening the text is fine. The scan must know where strings are as toml++
// does, so a quote where no string can start (right after a value, as in
// `x = 12"`) is refused too: toml++ rejects the value before it and reads on,
// while a scan taking the quote for a string would let the rest through.
std::optional<ConfigError> refuse_before_parsing(std::string_view text, std::size_t limit) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  const auto too_deep = [limit](int line) {
    return ConfigError{"", line,
                       fmt::format("nested more than {} levels deep; a configuration needs a few",
                                   limit)};
  };
  std::size_t brackets = 0;
  std::size_t dots = 0;
  int line = 1;
  char quote = 0;          // inside a string opened by this character
  bool multiline = false;  // a string opened by three quotes
  bool comment = false;
  // The last character of the line outside strings and comments that is not
  // a space: a string starts only at a key or a value, so after one of
  // "\n=[{,." ('\n': nothing yet on this line).
  char last = '\n';
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    // TOML allows no control character but tab and line breaks anywhere, in
    // strings and comments too (escapes stand for them). One here would only
    // mislead this scan (a NUL before a quote) about what toml++ reads next.
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') ||
        c == '\x7f')
      return ConfigError{"", line,
                         fmt::format("a control character (U+{:04X}); TOML allows none but tab "
                                     "and line breaks (inside a string, write an escape such as "
                                     "\\u0000)",
                                     static_cast<unsigned char>(c))};
    if (c == '\n') {
      ++line;
      dots = 0;
      comment = false;
      last = '\n';
      if (quote && !multiline) quote = 0;  // a broken single-line string: the parser reports it
      continue;
    }
    if (comment) continue;
    if (quote) {
      if (c == '\\' && quote == '"' && multiline) {
        // A line-ending backslash trims the white space and line breaks
        // after it; toml++ 3.3 reaches undefined behaviour when the first
        // character after them is non-ASCII.
        std::size_t j = i + 1;
        while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j;
        if (j < text.size() && (text[j] == '\n' || text[j] == '\r')) {
          std::size_t k = j;
          const std::string_view trimmed = " \t\r\n";
          while (k < text.size() && trimmed.find(text[k]) != std::string_view::npos) ++k;
          if (k < text.size() && static_cast<unsigned char>(text[k]) >= 0x80)
            return ConfigError{"", line,
                               "a non-ASCII character right after a line-ending backslash in a "
                               "multi-line string, which the TOML reader cannot take; write it "
                               "as an escape (\\uXXXX) or put an ASCII character before it"};
        }
      }
      if (c == '\\' && quote == '"') {
        // The escaped character; a line break stays one, to count the line.
        if (i + 1 < text.size() && text[i + 1] != '\n') ++i;
      } else if (c == quote) {
        if (!multiline) {
          quote = 0;
        } else {
          // Three quotes or more end a multi-line string, the last three
          // being the delimiter: `"""say "hi""""` holds `say "hi"`.
          std::size_t run = 1;
          while (i + run < text.size() && text[i + run] == quote) ++run;
          if (run >= 3) {
            quote = 0;
            multiline = false;
          }
          i += run - 1;
        }
        if (!quote) last = c;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') continue;
    if ((c == '"' || c == '\'') && std::string_view("\n=[{,.").find(last) == std::string_view::npos)
      return ConfigError{"", line,
                         fmt::format("a quote ({}) right after a value; a string starts only a "
                                     "value or a key. Is a quote missing or extra on this line?",
                                     c)};
    last = c;
    switch (c) {
      case '#':
        comment = true;
        break;
      case '"':
      case '\'':
        quote = c;
        multiline = text.substr(i, 3) == std::string(3, c);
        if (multiline) i += 2;
        break;
      case '[':
      case '{':
        if (++brackets > limit) return too_deep(line);
        break;
      case ']':
      case '}':
        if (brackets > 0) --brackets;
        break;
      case '.':
        if (++dots > limit) return too_deep(line);
        break;
      default:
        if (static_cast<unsigned char>(c) >= 0x80)
          return ConfigError{"", line,
                             "a non-ASCII character outside a string or a comment; quote it "
                             "(\"...\") or remove it"};
        break;
    }
  }
  return std::nullopt;
}

void read_data(Section s, DataConfig& c) {
  s.read("dir", c.dir);
  s.read_choice("synchronous", c.synchronous, sync_modes);
  s.check("dir", !c.dir.empty(), "must not be empty");
  // A path cannot hold them: "da\u0000ta" would be the directory "da".
  s.check("dir",
          std::none_of(c.dir.begin(), c.dir.end(),
                       [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; }),
          "must not hold control characters (a NUL, a newline)");
  s.report_unknown_keys();
}

void read_gateway(Section s, GatewayConfig& c) {
  s.read("listen", c.listen);
  // A token without an auth mode means the shared token, as before auth existed.
  s.read("token", c.token);
  check_token(s, "token", c.token);
  if (s.line("auth") == 0 && !c.token.empty()) c.auth = "token";
  s.read_choice("auth", c.auth, auth_modes);
  s.read("signing_key_env", c.signing_key_env);
  s.read("allow_anonymous", c.allow_anonymous);
  s.read("allowed_origins", c.allowed_origins);
  for (const auto& origin : c.allowed_origins)
    if (!s.failed("allowed_origins") && !net::valid_origin(origin))
      s.check("allowed_origins", false,
              fmt::format("\"{}\" is not an origin: write \"https://host\" or "
                          "\"http://host:port\" as the browser shows it, with no path or "
                          "trailing slash, or \"*\" for any",
                          origin));
  s.read("max_connections", c.max_connections, 1, 1000000);
  s.read("max_pending_messages", c.max_pending_messages, 1, 10000);
  s.read("max_messages_per_minute", c.max_messages_per_minute, 1, 1000000);
  s.read("heartbeat_interval", c.heartbeat_interval);
  s.read("heartbeat_timeout", c.heartbeat_timeout);
  s.read("max_message_bytes", c.max_message_bytes, 1, 64 * mib);
  s.read("max_buffered_bytes", c.max_buffered_bytes, mib, 1024 * 1024 * mib);
  if (!s.failed("max_buffered_bytes") && !s.failed("max_message_bytes"))
    s.check("max_buffered_bytes", c.max_buffered_bytes >= c.max_message_bytes,
            fmt::format("must be at least gateway.max_message_bytes ({}), or no message that "
                        "large could ever be received",
                        c.max_message_bytes));
  s.read("send_queue_limit", c.send_queue_limit, 1, 65536);
  // A zero interval would ping in a tight loop; a zero timeout would cut every
  // client off at the first ping.
  s.check("heartbeat_interval", c.heartbeat_interval > Duration::zero(), "must be more than 0ms");
  s.check("heartbeat_timeout", c.heartbeat_timeout > Duration::zero(), "must be more than 0ms");
  if (!s.failed("auth") && !s.failed("token")) {
    // Not set, it has no line of its own: the line that asks for it.
    if (c.auth == "token" && c.token.empty())
      s.fail_at("token", s.line("auth"), "must be set when gateway.auth is \"token\"");
    if (c.auth != "token" && !c.token.empty())
      s.check("auth", false,
              fmt::format("is \"{}\" but gateway.token is set; use auth = \"token\" or remove the "
                          "token",
                          c.auth));
  }
  if (c.auth == "signed")
    s.check("signing_key_env", is_credential_variable(c.signing_key_env),
            fmt::format("\"{}\" is not a credential variable name (upper case, ending in _KEY, "
                        "_TOKEN or _SECRET)",
                        c.signing_key_env));
  if (c.auth == "none" && !s.failed("listen") && !s.failed("auth") && !is_loopback(c.listen) &&
      !c.allow_anonymous && !s.failed("allow_anonymous"))
    s.fail_at("allow_anonymous",
              s.line("allow_anonymous") != 0 ? s.line("allow_anonymous") : s.line("listen"),
            fmt::format("gateway.listen \"{}\" is reachable from other machines and gateway.auth "
                        "is \"none\": anyone could read any user's replies; set gateway.auth to "
                        "\"token\" or \"signed\", or allow_anonymous = true if that is meant",
                        c.listen.to_string()));
  s.report_unknown_keys();
}

void read_admin(Section s, AdminConfig& c) {
  s.read("listen", c.listen);
  s.read("token", c.token);
  check_token(s, "token", c.token);
  s.read("allowed_hosts", c.allowed_hosts);
  for (const auto& host : c.allowed_hosts) {
    // A host name as a Host header carries it, without a port.
    const bool name = !host.empty() && host.size() <= 253 &&
                      std::all_of(host.begin(), host.end(), [](char ch) {
                        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' ||
                               ch == '-' || ch == '_';
                      });
    if (!s.failed("allowed_hosts") && !name)
      s.check("allowed_hosts", false,
              fmt::format("\"{}\" is not a host name (letters, digits, '.', '-'; no scheme, port "
                          "or path: \"panel.example\")",
                          runtime::shorten(host, 64)));
  }
  s.report_unknown_keys();
}

void read_provider(Section s, ProviderConfig& c) {
  s.read_choice("kind", c.kind, provider_kinds);
  s.read("base_url", c.base_url);
  s.read("api_key_env", c.api_key_env);
  s.read("model", c.model);
  s.read("system_prompt", c.system_prompt);
  s.read("attempt_timeout", c.attempt_timeout);
  s.read("total_timeout", c.total_timeout);
  s.read("max_attempts", c.max_attempts, 1, 100);
  s.read("backoff_initial", c.backoff_initial);
  s.read("backoff_max", c.backoff_max);
  s.read("max_concurrency", c.max_concurrency, 1, 10000);
  s.read("max_waiting", c.max_waiting, 0, 100000);
  s.read("max_reply_bytes", c.max_reply_bytes, 1024, 64 * mib);
  s.check("api_key_env", is_credential_variable(c.api_key_env),
          fmt::format("\"{}\" is not a credential variable name (upper case letters, digits and _, "
                      "ending in _KEY, _TOKEN or _SECRET): its value is sent to base_url as the API "
                      "key",
                      c.api_key_env));

  Section echo = s.section("echo");
  echo.read("token_delay", c.echo.token_delay);
  echo.report_unknown_keys();

  s.check("attempt_timeout", c.attempt_timeout > Duration::zero(), "must be more than 0ms");
  if (!c.base_url.empty()) {
    s.check("base_url", is_http_url(c.base_url),
            fmt::format("\"{}\" is not an http:// or https:// URL", c.base_url));
  }
  if (c.kind == "openai" && !s.failed("kind")) {
    // A key the file leaves out has no line of its own; point at the kind
    // that requires it.
    const auto require = [&s](std::string_view key, const std::string& value) {
      if (!value.empty() || s.failed(key)) return;
      const int line = s.line(key) != 0 ? s.line(key) : s.line("kind");
      s.fail_at(key, line, "must be set when provider.kind is \"openai\"");
    };
    require("base_url", c.base_url);
    require("model", c.model);
  }

  // Rules between two keys: blame the one the file sets (the other is at its
  // default), or the second of the pair when both are set.
  const auto relate = [&s](std::string_view low, std::string_view high, bool ok,
                           const std::string& message) {
    if (ok || s.failed(low) || s.failed(high)) return;
    const std::string_view blamed = s.line(high) != 0 || s.line(low) == 0 ? high : low;
    s.fail(blamed, message);
  };
  relate("attempt_timeout", "total_timeout", c.total_timeout >= c.attempt_timeout,
         fmt::format("provider.total_timeout ({}) must be at least provider.attempt_timeout ({})",
                     runtime::format_duration(c.total_timeout),
                     runtime::format_duration(c.attempt_timeout)));
  relate("backoff_initial", "backoff_max", c.backoff_initial <= c.backoff_max,
         fmt::format("provider.backoff_initial ({}) must not exceed provider.backoff_max ({})",
                     runtime::format_duration(c.backoff_initial),
                     runtime::format_duration(c.backoff_max)));
  s.report_unknown_keys();
}

void read_chat(Section s, ChatConfig& c) {
  s.read("history_messages", c.history_messages, 0, 1000);
  s.read("max_context_bytes", c.max_context_bytes, 0, 64 * mib);
  s.report_unknown_keys();
}

void read_onebot(Section s, OneBotConfig& c) {
  s.read("enabled", c.enabled);
  s.read("path", c.path);
  s.read("access_token", c.access_token);
  check_token(s, "access_token", c.access_token);
  s.read("self_ids", c.self_ids);
  s.read("group_prefixes", c.group_prefixes);
  s.read("api_timeout", c.api_timeout);
  s.read("max_message_chars", c.max_message_chars, 100, 100000);
  s.read("send_interval", c.send_interval);
  s.check("path", c.path.starts_with('/'), fmt::format("\"{}\" must start with \"/\"", c.path));
  // Beside the web chat's /ws/<user_id>, which would take it: the bridge
  // would be a web user, with neither the token checked nor OneBot spoken.
  s.check("path", !c.path.starts_with("/ws/"),
          fmt::format("\"{}\" is under /ws/, the web chat's (/ws/<user_id>); use another path, "
                      "such as the default \"/onebot/v11/ws\"",
                      c.path));
  s.check("api_timeout", c.api_timeout > Duration::zero(), "must be more than 0ms");
  for (const auto id : c.self_ids)
    s.check("self_ids", id > 0, fmt::format("{} is not a QQ number", id));
  for (const auto& prefix : c.group_prefixes)
    s.check("group_prefixes", !prefix.empty() && prefix.size() <= 64,
            "each prefix must be 1 to 64 characters");
  s.report_unknown_keys();
}

void read_shutdown(Section s, ShutdownConfig& c) {
  s.read("drain_timeout", c.drain_timeout);
  s.report_unknown_keys();
}

void read_log(Section s, LogConfig& c) {
  s.read_choice("level", c.level, log_levels);
  s.read("max_field_bytes", c.max_field_bytes, 16, mib);
  s.report_unknown_keys();
}

// TOML basic-string quoting, for the generated default file.
std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += fmt::format("\\u{:04X}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string quoted(Duration d) {
  return quoted(runtime::format_duration(d));
}
std::string quoted(const net::ListenAddress& a) {
  return quoted(a.to_string());
}
std::string toml_array(const std::vector<std::string>& values) {
  std::string out;
  for (const auto& value : values) out += (out.empty() ? "" : ", ") + quoted(value);
  return "[" + out + "]";
}
std::string toml_array(const std::vector<std::int64_t>& values) {
  std::string out;
  for (const auto value : values) out += (out.empty() ? "" : ", ") + std::to_string(value);
  return "[" + out + "]";
}

}  // namespace

std::string ConfigError::describe(std::string_view source) const {
  std::string out(source);
  if (line != 0) out += fmt::format(":{}", line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

ConfigResult parse_config(std::string_view toml_text) {
  const auto without_bom =
      toml_text.starts_with("\xEF\xBB\xBF") ? toml_text.substr(3) : toml_text;
  if (without_bom.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return std::vector<ConfigError>{ConfigError{
        "", 0,
        "the configuration is empty; an empty file would reset every key, tokens included (write "
        "the keys to change, or mooring print-default-config for all of them)"}};
  if (auto refused = refuse_before_parsing(toml_text, max_nesting))
    return std::vector<ConfigError>{std::move(*refused)};
  // After a value it rejects, toml++ may read on past where the scan above
  // saw a string, onto its non-ASCII characters, and reach its undefined
  // behaviour there. So a text with any is first parsed with each of their
  // bytes as '?': a text that passes has no rejected value, and the scan saw
  // its strings where toml++ does; one that fails gets that error.
  const auto body = toml_text.substr(toml_text.size() - without_bom.size());
  if (std::ranges::any_of(body, [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
    std::string ascii(body);
    for (auto& c : ascii)
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';
    try {
      (void)toml::parse(ascii);
    } catch (const toml::parse_error& error) {
      return std::vector<ConfigError>{
          ConfigError{"", line_of(error.source()), std::string(error.description())}};
    }
  }
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& error) {
    return std::vector<ConfigError>{
        ConfigError{"", line_of(error.source()), std::string(error.description())}};
  }

  auto config = std::make_shared<Config>();
  Problems problems;
  Section top(problems, &root, "");
  read_data(top.section("data"), config->data);
  read_gateway(top.section("gateway"), config->gateway);
  Section admin = top.section("admin");
  read_admin(admin, config->admin);
  // Port 0 is a different free port for each.
  if (config->admin.listen.port != 0 && !problems.failed("admin.listen") &&
      !problems.failed("gateway.listen"))
    admin.check("listen", !overlap(config->admin.listen, config->gateway.listen),
                fmt::format("\"{}\" takes the port of gateway.listen \"{}\" (one of them would "
                            "never bind); the two listeners need ports of their own",
                            config->admin.listen.to_string(), config->gateway.listen.to_string()));
  read_provider(top.section("provider"), config->provider);
  read_chat(top.section("chat"), config->chat);
  Section onebot = top.section("onebot");
  read_onebot(onebot, config->onebot);
  // The gateway's rule for auth = "none", for the OneBot path on the same
  // listener. Left out, access_token has no line: point at `enabled`.
  if (onebot_open_to_others(*config) && !config->gateway.allow_anonymous &&
      !problems.failed("gateway.listen") && !problems.failed("gateway.allow_anonymous") &&
      !onebot.failed("enabled") && !onebot.failed("access_token")) {
    const int line =
        onebot.line("access_token") != 0 ? onebot.line("access_token") : onebot.line("enabled");
    onebot.fail_at(
        "access_token", line,
        fmt::format("onebot is enabled on gateway.listen \"{}\", which other machines can reach, "
                    "with no access_token: anyone could connect as a QQ bot, read its users' "
                    "replies and speak for it; set onebot.access_token (and the same token in the "
                    "OneBot implementation), or gateway.allow_anonymous = true if that is meant",
                    config->gateway.listen.to_string()));
  }
  read_shutdown(top.section("shutdown"), config->shutdown);
  read_log(top.section("log"), config->log);
  top.report_unknown_keys();

  auto errors = problems.take();
  if (!errors.empty()) return errors;
  return ConfigPtr(std::move(config));
}

std::variant<std::string, ConfigError> read_config_text(const std::string& path,
                                                        std::chrono::milliseconds wait) {
  const auto unreadable = [&path](int error) {
    return ConfigError{"", 0,
                       fmt::format("cannot read configuration file \"{}\": {}", path,
                                   std::generic_category().message(error))};
  };
  const auto too_large = [&path] {
    return ConfigError{
        "", 0,
        fmt::format("configuration file \"{}\" is larger than {} bytes", path, max_file_bytes)};
  };
  // Not blocked by a FIFO nobody writes: its open returns at once, and its
  // bytes are waited for below, for `wait` at most.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return unreadable(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) return unreadable(errno);
  if (S_ISDIR(info.st_mode)) return unreadable(EISDIR);
  const bool regular = S_ISREG(info.st_mode);
  const auto deadline = std::chrono::steady_clock::now() + wait;

  std::string text;
  char buffer[8192];
  for (;;) {
    if (!regular) {
      // A pipe's end comes as POLLHUP once a writer has come and gone (Linux
      // does not report it before one came); its bytes as POLLIN.
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd ready{.fd = fd, .events = POLLIN, .revents = 0};
      const int polled = left.count() > 0 ? ::poll(&ready, 1, static_cast<int>(left.count())) : 0;
      if (polled < 0 && errno == EINTR) continue;
      if (polled < 0) return unreadable(errno);
      if (polled == 0)
        return ConfigError{
            "", 0,
            fmt::format("\"{}\" is not a regular file (a pipe, a FIFO or a device) and {} "
                        "within {}; mooring reads its configuration from a file: save it to one "
                        "and reload again",
                        path, text.empty() ? "nothing came from it" : "what came did not end",
                        runtime::format_duration(wait))};
    }
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text.append(buffer, static_cast<std::size_t>(n));
      if (text.size() > max_file_bytes) return too_large();
      continue;
    }
    if (n == 0) return text;
    if (errno == EINTR || errno == EAGAIN) continue;
    return unreadable(errno);
  }
}

ConfigResult load_config_file(const std::string& path) {
  auto text = read_config_text(path);
  if (auto* error = std::get_if<ConfigError>(&text)) return std::vector<ConfigError>{*error};
  return parse_config(std::get<std::string>(text));
}

std::vector<std::string> changed_keys(const Config& before, const Config& after) {
  std::vector<std::string> keys;
  const auto compare = [&keys](std::string_view key, const auto& a, const auto& b) {
    if (!(a == b)) keys.emplace_back(key);
  };
  const Config& a = before;
  const Config& b = after;
  compare("data.dir", a.data.dir, b.data.dir);
  compare("data.synchronous", a.data.synchronous, b.data.synchronous);
  compare("gateway.listen", a.gateway.listen, b.gateway.listen);
  compare("gateway.auth", a.gateway.auth, b.gateway.auth);
  compare("gateway.token", a.gateway.token, b.gateway.token);
  compare("gateway.signing_key_env", a.gateway.signing_key_env, b.gateway.signing_key_env);
  compare("gateway.allow_anonymous", a.gateway.allow_anonymous, b.gateway.allow_anonymous);
  compare("gateway.allowed_origins", a.gateway.allowed_origins, b.gateway.allowed_origins);
  compare("gateway.heartbeat_interval", a.gateway.heartbeat_interval, b.gateway.heartbeat_interval);
  compare("gateway.heartbeat_timeout", a.gateway.heartbeat_timeout, b.gateway.heartbeat_timeout);
  compare("gateway.max_message_bytes", a.gateway.max_message_bytes, b.gateway.max_message_bytes);
  compare("gateway.max_buffered_bytes", a.gateway.max_buffered_bytes,
          b.gateway.max_buffered_bytes);
  compare("gateway.send_queue_limit", a.gateway.send_queue_limit, b.gateway.send_queue_limit);
  compare("gateway.max_connections", a.gateway.max_connections, b.gateway.max_connections);
  compare("gateway.max_pending_messages", a.gateway.max_pending_messages,
          b.gateway.max_pending_messages);
  compare("gateway.max_messages_per_minute", a.gateway.max_messages_per_minute,
          b.gateway.max_messages_per_minute);
  compare("admin.listen", a.admin.listen, b.admin.listen);
  compare("admin.token", a.admin.token, b.admin.token);
  compare("admin.allowed_hosts", a.admin.allowed_hosts, b.admin.allowed_hosts);
  compare("provider.kind", a.provider.kind, b.provider.kind);
  compare("provider.base_url", a.provider.base_url, b.provider.base_url);
  compare("provider.api_key_env", a.provider.api_key_env, b.provider.api_key_env);
  compare("provider.model", a.provider.model, b.provider.model);
  compare("provider.system_prompt", a.provider.system_prompt, b.provider.system_prompt);
  compare("provider.attempt_timeout", a.provider.attempt_timeout, b.provider.attempt_timeout);
  compare("provider.total_timeout", a.provider.total_timeout, b.provider.total_timeout);
  compare("provider.max_attempts", a.provider.max_attempts, b.provider.max_attempts);
  compare("provider.backoff_initial", a.provider.backoff_initial, b.provider.backoff_initial);
  compare("provider.backoff_max", a.provider.backoff_max, b.provider.backoff_max);
  compare("provider.max_concurrency", a.provider.max_concurrency, b.provider.max_concurrency);
  compare("provider.max_waiting", a.provider.max_waiting, b.provider.max_waiting);
  compare("provider.max_reply_bytes", a.provider.max_reply_bytes, b.provider.max_reply_bytes);
  compare("provider.echo.token_delay", a.provider.echo.token_delay, b.provider.echo.token_delay);
  compare("chat.history_messages", a.chat.history_messages, b.chat.history_messages);
  compare("chat.max_context_bytes", a.chat.max_context_bytes, b.chat.max_context_bytes);
  compare("onebot.enabled", a.onebot.enabled, b.onebot.enabled);
  compare("onebot.path", a.onebot.path, b.onebot.path);
  compare("onebot.access_token", a.onebot.access_token, b.onebot.access_token);
  compare("onebot.self_ids", a.onebot.self_ids, b.onebot.self_ids);
  compare("onebot.group_prefixes", a.onebot.group_prefixes, b.onebot.group_prefixes);
  compare("onebot.api_timeout", a.onebot.api_timeout, b.onebot.api_timeout);
  compare("onebot.max_message_chars", a.onebot.max_message_chars, b.onebot.max_message_chars);
  compare("onebot.send_interval", a.onebot.send_interval, b.onebot.send_interval);
  compare("shutdown.drain_timeout", a.shutdown.drain_timeout, b.shutdown.drain_timeout);
  compare("log.level", a.log.level, b.log.level);
  compare("log.max_field_bytes", a.log.max_field_bytes, b.log.max_field_bytes);
  return keys;
}

std::vector<std::string> guessable_tokens(const Config& config) {
  constexpr std::size_t least = 16;
  std::vector<std::string> found;
  const auto check = [&](std::string_view key, const std::string& token) {
    if (token.empty() || token.size() >= least) return;
    found.push_back(fmt::format(
        "{} is {} character{} long and can be guessed; use {} random characters or more (for "
        "example the output of `openssl rand -hex 32`)",
        key, token.size(), token.size() == 1 ? "" : "s", least * 2));
  };
  check("admin.token", config.admin.token);
  check("gateway.token", config.gateway.token);
  check("onebot.access_token", config.onebot.access_token);
  return found;
}

std::vector<std::string> weakened_access(const Config& before, const Config& after) {
  std::vector<std::string> reasons;
  const auto& was = before.gateway;
  const auto& now = after.gateway;
  if (was.auth != "none" && now.auth == "none")
    reasons.push_back(fmt::format("gateway.auth would go from \"{}\" to \"none\"", was.auth));
  if (was.auth == "signed" && now.auth == "token")
    reasons.push_back("gateway.auth would go from per-user \"signed\" tokens to one shared token");
  if (!was.allow_anonymous && now.allow_anonymous && now.auth == "none")
    reasons.push_back("gateway.allow_anonymous would let anyone on the network be any user");
  const auto any_origin = [](const GatewayConfig& g) {
    return std::find(g.allowed_origins.begin(), g.allowed_origins.end(), "*") !=
           g.allowed_origins.end();
  };
  if (now.auth == "none" && !any_origin(was) && any_origin(now))
    reasons.push_back("gateway.allowed_origins = [\"*\"] would let any web page be any user");
  if (now.auth == "none" && is_loopback(was.listen) && !is_loopback(now.listen))
    reasons.push_back(fmt::format("gateway.listen would move from loopback to {} without auth",
                                  now.listen.to_string()));
  if (!before.admin.token.empty() && after.admin.token.empty())
    reasons.push_back("admin.token would be dropped for the generated one");
  // OneBot is held to what a start with `after` allows (parse_config refuses
  // it open to other machines unless allow_anonymous), and a reload never
  // opens it further: enabling it, moving it to a public address or dropping
  // its guards there needs a restart, as the gateway's do.
  const auto& bot_was = before.onebot;
  const auto& bot_now = after.onebot;
  if (bot_was.enabled && !bot_was.access_token.empty() && bot_now.access_token.empty())
    reasons.push_back("onebot.access_token would be dropped");
  else if (!onebot_open_to_others(before) && onebot_open_to_others(after))
    reasons.push_back(fmt::format("onebot would admit any bridge without a token on {}",
                                  after.gateway.listen.to_string()));
  if (bot_was.enabled && bot_now.enabled && !bot_was.self_ids.empty() &&
      bot_now.self_ids.empty() && !is_loopback(after.gateway.listen))
    reasons.push_back(fmt::format("onebot.self_ids would be emptied, letting any QQ account "
                                  "connect on {}",
                                  after.gateway.listen.to_string()));
  return reasons;
}

ConfigPtr default_config() {
  static const ConfigPtr defaults = std::make_shared<const Config>();
  return defaults;
}

std::string default_config_toml() {
  const Config& c = *default_config();
  return fmt::format(
      R"(# mooring configuration. Every key is shown at its default value.
# Durations are written as "250ms", "5s", "10m" or "1h". Addresses are
# "host:port" with an IPv4 address, a bracketed IPv6 address ("[::1]:8080") or
# "localhost"; port 0 picks a free port. Unknown keys are errors.

[data]
# Directory for the database and the generated admin token (created 0700).
dir = {}
# "full": every acknowledged message survives a power cut or an OS crash
# (fsync at each commit). "normal": it survives a crash or kill -9 of mooring,
# but the last commits before a power cut may be lost.
synchronous = {}

[gateway]
# Where chat clients connect: ws://<listen>/ws/<user_id>.
listen = {}
# "none": no check (refused on a non-loopback address unless allow_anonymous);
# "token": every client sends the shared token below; "signed": each client
# sends its own HS256 token whose "sub" is its user id (mooring token issue).
# Tokens go in "Authorization: Bearer <token>" or ?token=; a token is printable
# ASCII, with no space at either end.
auth = {}
# The shared token for auth = "token" (setting it alone means auth = "token").
token = {}
# Environment variable holding the signing key for auth = "signed".
signing_key_env = {}
# Allow auth = "none", and OneBot without an access_token, on an address other
# machines can reach.
allow_anonymous = {}
# Browser pages allowed to open /ws/<user> (their origin: "https://chat.example",
# "http://host:port"; "*": any). A page of the address the gateway is reached
# at, when that is an IP address or localhost, always may (the admin panel's
# chat); any other, a page under the gateway's own name included, is refused
# with 403, since with the browser's help it could act as any user. Clients
# that are not browsers send no origin.
allowed_origins = {}
# How often each connected client is pinged.
heartbeat_interval = {}
# A client silent this long after a ping is disconnected (its session stays).
heartbeat_timeout = {}
# Largest message a client may send, in bytes; a bigger one closes with 1009
# (from a OneBot implementation, up to 64 MiB, it is dropped unread instead).
max_message_bytes = {}
# Bytes all connections together may hold in messages being received and
# frames waiting to be sent. A message that needs more closes its connection
# with 1013 (try again later); a backlog (a reconnect, a resume) waits for
# room before its next page.
max_buffered_bytes = {}
# Frames queued for a client that reads too slowly before it is disconnected.
send_queue_limit = {}
# Open connections at most; more are refused with 503 before the upgrade.
max_connections = {}
# Messages of one user waiting for their reply; beyond it mooring stops
# reading that user's socket until one is answered (TCP pushes back).
max_pending_messages = {}
# Messages one user may send per minute; beyond it they get a "rate_limited"
# error and are not stored.
max_messages_per_minute = {}

[admin]
# Where the admin panel and API listen.
listen = {}
# Bearer token for /api; empty: generated into <data.dir>/admin.token (mode 0600).
token = {}
# Names the admin API and panel answer to besides IP addresses and localhost
# ("panel.example"); a request addressed to another name is refused with 421,
# since a page of another site can point its own name at this machine.
allowed_hosts = {}

[provider]
# "echo" (built in, repeats the message, no network) or "openai" (any
# OpenAI-compatible /chat/completions endpoint).
kind = {}
# API root for "openai", e.g. "https://api.openai.com/v1"; required for it.
base_url = {}
# Environment variable that holds the API key (the key itself is never stored here).
api_key_env = {}
# Model name sent to the provider; required for "openai".
model = {}
# Sent as the system message before the conversation; empty: none.
system_prompt = {}
# How long the provider may send nothing before an attempt fails: until its
# answer begins, and between two pieces of it (a reasoning model's thinking counts).
attempt_timeout = {}
# Deadline for a reply including every retry.
total_timeout = {}
# Attempts per reply, the first one included.
max_attempts = {}
# Largest wait before the first retry; it doubles per retry (with random jitter).
backoff_initial = {}
# The wait between retries never exceeds this.
backoff_max = {}
# Requests to the provider in flight at once; more wait their turn.
max_concurrency = {}
# Requests waiting for one of those slots; beyond it a user is told at once
# that mooring is busy. Neither limit applies to the echo provider.
max_waiting = {}
# Longest reply taken from the provider, in bytes; a longer one is cut there
# and ends with a note that it was cut.
max_reply_bytes = {}

[provider.echo]
# Pause between streamed tokens, to simulate a slow model.
token_delay = {}

[chat]
# Stored messages sent to the provider as context with each new message.
history_messages = {}
# The context sent with a message is at most this many bytes (newest first).
max_context_bytes = {}

[onebot]
# Accept OneBot v11 reverse WebSocket connections (QQ bot bridges) on the gateway.
enabled = {}
# Path of the OneBot WebSocket on the gateway address.
path = {}
# Token the bridge must send (printable ASCII); empty: no check, refused when
# gateway.listen is reachable from other machines unless allow_anonymous.
access_token = {}
# QQ accounts (X-Self-ID) allowed to connect; empty: any.
self_ids = {}
# In groups, messages starting with one of these are answered (as are
# @-mentions and replies to the bot); others are kept as context only.
group_prefixes = {}
# Deadline for each call the bot makes (sending a message). A send unanswered
# after twice this is waited for further behind a backlog of earlier sends,
# sent again when later ones were answered, or, when none was, its connection
# is closed so that it reconnects; given up after 3 sends (docs/onebot.md).
api_timeout = {}
# Longer replies are split into several messages of at most this many characters.
max_message_chars = {}
# Pause between messages to one group or user (bursts of 3 allowed).
send_interval = {}

[shutdown]
# On SIGINT/SIGTERM, replies in flight may finish for this long before the rest is cancelled.
drain_timeout = {}

[log]
# trace, debug, info, warn, error, critical or off.
level = {}
# Longest value (message text, upstream body) printed in one log field, in bytes.
max_field_bytes = {}
)",
      quoted(c.data.dir), quoted(c.data.synchronous), quoted(c.gateway.listen),
      quoted(c.gateway.auth), quoted(c.gateway.token), quoted(c.gateway.signing_key_env),
      c.gateway.allow_anonymous, toml_array(c.gateway.allowed_origins),
      quoted(c.gateway.heartbeat_interval),
      quoted(c.gateway.heartbeat_timeout), c.gateway.max_message_bytes,
      c.gateway.max_buffered_bytes,
      c.gateway.send_queue_limit, c.gateway.max_connections, c.gateway.max_pending_messages,
      c.gateway.max_messages_per_minute, quoted(c.admin.listen),
      quoted(c.admin.token), toml_array(c.admin.allowed_hosts), quoted(c.provider.kind),
      quoted(c.provider.base_url),
      quoted(c.provider.api_key_env), quoted(c.provider.model), quoted(c.provider.system_prompt),
      quoted(c.provider.attempt_timeout), quoted(c.provider.total_timeout), c.provider.max_attempts,
      quoted(c.provider.backoff_initial), quoted(c.provider.backoff_max),
      c.provider.max_concurrency, c.provider.max_waiting, c.provider.max_reply_bytes,
      quoted(c.provider.echo.token_delay), c.chat.history_messages, c.chat.max_context_bytes,
      c.onebot.enabled, quoted(c.onebot.path), quoted(c.onebot.access_token),
      toml_array(c.onebot.self_ids), toml_array(c.onebot.group_prefixes),
      quoted(c.onebot.api_timeout), c.onebot.max_message_chars, quoted(c.onebot.send_interval),
      quoted(c.shutdown.drain_timeout), quoted(c.log.level), c.log.max_field_bytes);
}

}  // namespace mooring::app
