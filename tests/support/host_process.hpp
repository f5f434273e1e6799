// `mooring serve` as an integration test runs it: a config file on port 0 in a
// data directory the test owns, the listeners' addresses from the ready file,
// the admin token, and a stop by signal whose exit code the test checks.
// Several hosts may run one after another on the same directory (a restart).
#pragma once

#include "support/process.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mooring::test {

class HostProcess {
 public:
  // Writes `<dir>/mooring.toml` (gateway and admin on 127.0.0.1:0, with
  // `gateway_keys` added to [gateway], then `extra_config`: further tables),
  // starts the binary in `dir` and waits up to `timeout` for the ready file to
  // name both listeners. Check started() before use.
  HostProcess(const std::string& binary, const std::filesystem::path& dir,
              const std::string& extra_config = "", const std::string& gateway_keys = "",
              std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // In a test that failed (or is unwinding from an exception), prints the
  // end of the host's log: the server's side of the story.
  ~HostProcess();
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  bool started() const { return !gateway_.empty() && !admin_.empty(); }
  const std::string& gateway() const { return gateway_; }  // "host:port"
  const std::string& admin() const { return admin_; }
  std::string admin_token() const;

  // GET /api/status with the admin token, parsed; throws when it is not 200.
  boost::json::object status() const;

  ChildProcess& process() { return *process_; }
  std::string log() const { return process_->stderr_text(); }

  // SIGINT, then the exit code (nullopt if the host did not exit in `timeout`).
  std::optional<int> interrupt(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // SIGKILL, as a crash or the OOM killer would end it.
  void kill_hard();

 private:
  std::filesystem::path dir_;
  std::unique_ptr<ChildProcess> process_;
  std::string gateway_;
  std::string admin_;
};

class ChatClient;

// An operator's Ctrl+C: the users still connected are told the server is
// going away (1001), and the host exits 0 without a trace of a crash.
void expect_clean_stop(HostProcess& host, const std::vector<ChatClient*>& still_connected = {});

// Lines that only a crash, an uncaught exception or a sanitizer would print.
// Returns the first one found in `log`, or an empty string.
std::string find_crash_marker(const std::string& log);

}  // namespace mooring::test
