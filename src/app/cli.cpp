#include "app/cli.hpp"

#include "app/components.hpp"
#include "app/config.hpp"
#include "app/host.hpp"
#include "app/version.hpp"
#include "chat/protocol.hpp"
#include "chat/user_token.hpp"
#include "runtime/duration.hpp"
#include "runtime/log.hpp"
#include "runtime/signals.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <sys/stat.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

namespace mooring::app {
namespace {

constexpr int exit_invalid = 2;

// Loads the file, or prints every problem to stderr and returns null. `text`
// receives what was read.
ConfigPtr load_or_report(const std::string& path, std::string* text = nullptr) {
  // Read while the stop signals wait (run_cli): a FIFO or a pipe nobody
  // writes would hold the start, and Ctrl+C with it, for ever.
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode) && !S_ISDIR(info.st_mode)) {
    std::cerr << path << ": not a regular file (a pipe, a FIFO or a device): mooring reads its "
              << "configuration from a file, and again from it at each reload; save it to a "
              << "file and pass that\n";
    return nullptr;
  }
  auto read = read_config_text(path);
  ConfigResult result = std::vector<ConfigError>{};
  if (auto* error = std::get_if<ConfigError>(&read)) {
    result = std::vector<ConfigError>{*error};
  } else {
    result = parse_config(std::get<std::string>(read));
    if (text) *text = std::get<std::string>(read);
  }
  if (auto* config = std::get_if<ConfigPtr>(&result)) return *config;
  const auto& errors = std::get<std::vector<ConfigError>>(result);
  for (const auto& error : errors) std::cerr << error.describe(path) << '\n';
  std::cerr << path << ": " << errors.size() << " problem(s); nothing was started\n";
  return nullptr;
}

// Where the configuration is read from when no -c names it: ./mooring.toml
// if there is one, else nothing (the built-in defaults). nullopt, and why on
// stderr, when the working directory cannot be looked in.
std::optional<std::string> implicit_config_path() {
  std::error_code error;
  const bool there = std::filesystem::exists("mooring.toml", error);
  if (error) {
    std::cerr << "cannot look for ./mooring.toml in the working directory (" << error.message()
              << "); name the configuration with -c FILE, or start in a directory this user "
                 "can read\n";
    return std::nullopt;
  }
  return there ? std::string("mooring.toml") : std::string();
}

// `mooring token issue`: 0 and the token on stdout, or 2 and why on stderr.
int issue_token(const std::string& user, const std::string& ttl_text, std::string config_path) {
  if (!chat::valid_user_id(user)) {
    std::cerr << "\"" << runtime::shorten(user, 64)
              << "\" is not a user id ([A-Za-z0-9_.:-]{1,128}, neither . nor ..)\n";
    return exit_invalid;
  }
  const auto ttl = runtime::parse_duration(ttl_text);
  if (!ttl || *ttl <= runtime::Duration::zero() || *ttl > std::chrono::hours(24 * 365)) {
    std::cerr << "--ttl \"" << ttl_text << "\" is not a duration from 1ms to 365 days (e.g. 24h)\n";
    return exit_invalid;
  }
  if (config_path.empty()) {
    const auto implicit = implicit_config_path();
    if (!implicit) return exit_invalid;
    config_path = *implicit;
  }
  ConfigPtr config = config_path.empty() ? default_config() : load_or_report(config_path);
  if (!config) return exit_invalid;
  const auto& variable = config->gateway.signing_key_env;
  const char* key = std::getenv(variable.c_str());
  if (key == nullptr || std::strlen(key) < chat::min_signing_key_bytes) {
    std::cerr << "$" << variable << " must hold the gateway's signing key (at least "
              << chat::min_signing_key_bytes << " bytes), as for the running mooring\n";
    return exit_invalid;
  }
  std::cout << chat::mint_user_token(user, key, chat::SystemClock::now() + *ttl) << '\n';
  return 0;
}

// CLI11 answers "A subcommand is required" to a mistyped command too: the
// word that is no command is named instead, with the ones there are.
std::optional<std::string> mistyped_command(int argc, char** argv, const CLI::App& cli) {
  const CLI::App* level = &cli;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.starts_with("-")) return std::nullopt;  // options are CLI11's to judge
    const auto commands = level->get_subcommands([](const CLI::App*) { return true; });
    if (commands.empty()) return std::nullopt;  // the rest are arguments
    const CLI::App* next = nullptr;
    std::string names;
    for (const auto* command : commands) {
      if (command->get_name() == word) next = command;
      names += (names.empty() ? "" : ", ") + command->get_name();
    }
    if (!next)
      return fmt::format("\"{}\" is not a command of {}; the commands are {} (--help says more)",
                         runtime::shorten(word, 64), level == &cli ? "mooring" : level->get_name(),
                         names);
    level = next;
  }
  return std::nullopt;
}

}  // namespace

int run_cli(int argc, char** argv) {
  // Until the host watches for them, stop signals wait (see signals.hpp).
  runtime::hold_stop_signals();
  // A file-size limit (ulimit -f, systemd's LimitFSIZE=) would end the process
  // at the first write past it; ignored, that write fails with EFBIG and the
  // store says so and goes on as on a full disk.
  std::signal(SIGXFSZ, SIG_IGN);
  // A log read through a pipe (`mooring serve | tee`, a logger that
  // restarts) would end the process at the first line written after its
  // reader left; ignored, that write fails and the host goes on.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App cli{"mooring: a host for LLM chat bots that starts, reloads and stops cleanly"};
  cli.set_version_flag("--version", std::string("mooring ") + MOORING_VERSION);
  cli.require_subcommand(1);

  std::string config_path;
  std::string ready_file;
  auto* serve = cli.add_subcommand("serve", "run the host");
  serve->add_option("-c,--config", config_path,
                    "configuration file (default: ./mooring.toml if present, else built-in defaults)");
  serve->add_option("--ready-file", ready_file,
                    "write the bound addresses here as JSON once every listener is up");

  std::string check_path;
  auto* check = cli.add_subcommand("check-config", "validate a configuration file (exit 0 valid, 2 invalid)");
  check->add_option("-c,--config", check_path, "configuration file")->required();

  cli.add_subcommand("print-default-config", "print the default configuration, commented");

  // mooring token issue USER [--ttl 24h] [-c FILE]: a signed gateway token.
  auto* token = cli.add_subcommand("token", "gateway tokens for gateway.auth = \"signed\"");
  token->require_subcommand(1);
  auto* issue = token->add_subcommand(
      "issue", "print a token that lets USER connect as USER (the key is read from the variable "
               "gateway.signing_key_env names)");
  std::string token_user;
  std::string token_ttl = "24h";
  std::string token_config;
  issue->add_option("user", token_user, "the user id ([A-Za-z0-9_.:-]{1,128})")->required();
  issue->add_option("--ttl", token_ttl, "how long the token is valid (\"30m\", \"24h\", up to 365 days)");
  issue->add_option("-c,--config", token_config,
                    "configuration file naming the key's variable (default: ./mooring.toml if "
                    "present)");

  if (const auto mistyped = mistyped_command(argc, argv, cli)) {
    std::cerr << *mistyped << "\n";
    return exit_invalid;
  }
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = cli.exit(e);
    return code == 0 ? 0 : exit_invalid;
  }
  if (!cli.got_subcommand("serve")) runtime::release_stop_signals();
  // An unset variable (`-c "$CONFIG"`) would otherwise start on the
  // defaults, with a fresh database and admin token.
  for (const auto* command : {serve, check, issue})
    if (const auto* option = command->get_option("--config");
        command->parsed() && option->count() > 0 && option->as<std::string>().empty()) {
      std::cerr << "-c names no file (an empty value); give the configuration file's path, or "
                   "leave -c out\n";
      return exit_invalid;
    }

  if (cli.got_subcommand("print-default-config")) {
    std::cout << default_config_toml();
    return 0;
  }

  if (issue->parsed()) return issue_token(token_user, token_ttl, token_config);

  if (cli.got_subcommand("check-config")) {
    auto config = load_or_report(check_path);
    if (!config) return exit_invalid;
    // What `serve` takes from the environment rather than the file (the
    // signing key of auth = "signed"): a valid file it would still refuse.
    if (auto options = gateway_options(*config); !options) {
      std::cerr << check_path << ": valid, but serve would not start in this environment: "
                << options.error() << "\n";
      return 1;
    }
    for (const auto& warning : guessable_tokens(*config))
      std::cerr << check_path << ": warning: " << warning << "\n";
    std::cout << check_path << ": valid\n";
    return 0;
  }

  runtime::init_logging();
  if (config_path.empty()) {
    const auto implicit = implicit_config_path();
    if (!implicit) return exit_invalid;
    config_path = *implicit;
  }
  std::string config_text;
  ConfigPtr config = config_path.empty() ? default_config() : load_or_report(config_path, &config_text);
  if (!config) return exit_invalid;
  runtime::set_log_level(config->log.level);
  runtime::set_max_field_bytes(config->log.max_field_bytes);
  log::info("mooring {} starting with {}", MOORING_VERSION,
            config_path.empty() ? std::string("built-in defaults") : config_path);
  return run_host(config, HostOptions{config_path, config_text, ready_file});
}

}  // namespace mooring::app
