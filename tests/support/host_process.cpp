#include "support/host_process.hpp"

#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <exception>
#include <iostream>
#include <stdexcept>

namespace mooring::test {

namespace json = boost::json;

HostProcess::HostProcess(const std::string& binary, const std::filesystem::path& dir,
                         const std::string& extra_config, const std::string& gateway_keys,
                         std::chrono::milliseconds timeout)
    : dir_(dir) {
  write_file(dir_ / "mooring.toml", "[gateway]\nlisten = \"127.0.0.1:0\"\n" + gateway_keys +
                                        "[admin]\nlisten = \"127.0.0.1:0\"\n" + extra_config);
  const auto ready_path = dir_ / "ready.json";
  std::filesystem::remove(ready_path);  // a previous run's file names its old ports
  process_ = std::make_unique<ChildProcess>(
      binary, std::vector<std::string>{"serve", "--ready-file", ready_path.string()}, dir_);
  poll_until(
      [&] {
        if (!process_->running()) return true;
        const auto text = read_file(ready_path);
        if (text.empty()) return false;
        boost::system::error_code ec;
        const auto parsed = json::parse(text, ec);
        if (ec || !parsed.is_object()) return false;
        const auto& ready = parsed.as_object();
        if (!ready.contains("gateway") || !ready.contains("admin")) return false;
        gateway_ = std::string(ready.at("gateway").as_string());
        admin_ = std::string(ready.at("admin").as_string());
        return true;
      },
      timeout);
}

HostProcess::~HostProcess() {
  if (!::testing::Test::HasFailure() && std::uncaught_exceptions() == 0) return;
  const auto text = log();
  std::size_t start = text.size();
  for (int lines = 0; lines < 80 && start > 0; ++lines) {
    start = text.rfind('\n', start - 1);
    if (start == std::string::npos) {
      start = 0;
      break;
    }
  }
  std::cerr << "---- the end of mooring's log (" << dir_.string() << ") ----\n"
            << text.substr(start) << "\n---- end of log ----\n";
}

std::string HostProcess::admin_token() const {
  auto token = read_file(dir_ / "mooring-data" / "admin.token");
  token.erase(token.find_last_not_of('\n') + 1);
  return token;
}

json::object HostProcess::status() const {
  const auto reply = http_get(admin_, "/api/status", admin_token());
  if (reply.status != 200)
    throw std::runtime_error("GET /api/status answered " + std::to_string(reply.status) + ": " +
                             reply.body);
  return json::parse(reply.body).as_object();
}

std::optional<int> HostProcess::interrupt(std::chrono::milliseconds timeout) {
  process_->signal(SIGINT);
  return process_->wait_exit(timeout);
}

void HostProcess::kill_hard() {
  process_->signal(SIGKILL);
  process_->wait_exit(std::chrono::seconds(10));
}

std::string find_crash_marker(const std::string& log) {
  for (const char* marker : {"terminate called", "Traceback", "Segmentation fault", "Aborted",
                             "AddressSanitizer", "runtime error:", " error ", " critical "})
    if (log.find(marker) != std::string::npos) return marker;
  return {};
}

void expect_clean_stop(HostProcess& host, const std::vector<ChatClient*>& still_connected) {
  host.process().signal(SIGINT);
  for (auto* client : still_connected) EXPECT_EQ(client->read_until_closed(), 1001);
  const auto code = host.process().wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value()) << "mooring did not exit after SIGINT";
  EXPECT_EQ(*code, 0) << host.log();
  EXPECT_EQ(find_crash_marker(host.log()), "") << host.log();
}

}  // namespace mooring::test
