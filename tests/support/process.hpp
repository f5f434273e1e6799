// Runs the real mooring binary as a child process for integration tests: its
// own working directory, stdout and stderr captured to files, signals, and a
// wait for exit with a deadline (through a pidfd, no polling).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mooring::test {

// A fresh directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& content);

class ChildProcess {
 public:
  // Starts `binary args...` in `cwd`; extra environment entries "NAME=value".
  ChildProcess(const std::string& binary, const std::vector<std::string>& args,
               const std::filesystem::path& cwd, const std::vector<std::string>& env = {});
  ~ChildProcess();  // kills the child if it still runs
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // The exit code (128 + signal if killed by one), or nullopt if the child
  // still runs after `timeout`.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();

  std::string stdout_text() const { return read_file(stdout_path_); }
  std::string stderr_text() const { return read_file(stderr_path_); }

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<int> exit_code_;
  std::filesystem::path stdout_path_;
  std::filesystem::path stderr_path_;
};

// Runs a command to completion and returns {exit code, stdout, stderr}.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::string& binary, const std::vector<std::string>& args,
                          const std::filesystem::path& cwd,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace mooring::test
