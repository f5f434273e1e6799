// The owner of every background coroutine in mooring. A task is spawned with a
// name and a group, can be listed, cancelled alone, by group or all together,
// and joined with a deadline that names the stragglers. An exception escaping a
// task is caught here, logged once with the task's name and counted: it never
// reaches the event loop.
//
// Cancellation has two stages, as in Beast's server-flex-awaitable example:
// `total` (graceful: the pending operation is aborted, the task may run its
// cleanup I/O after `co_await this_coro::reset_cancellation_state()`), then
// `terminal` (everything the task still waits on is aborted).
#pragma once

#include "runtime/asio.hpp"
#include "runtime/time.hpp"

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::runtime {

using TaskId = std::uint64_t;

struct TaskInfo {
  TaskId id = 0;
  std::string name;
  std::string group;
  Clock::time_point started;
  bool cancel_requested = false;
};

class Supervisor {
 public:
  explicit Supervisor(asio::any_io_executor executor);
  // Tasks hold a pointer to their supervisor: destroy it only after join()
  // reported no stragglers, or after the io_context that runs them is gone.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  const asio::any_io_executor& executor() const { return executor_; }

  // Starts `body` on the supervisor's executor. `body` must not be a coroutine
  // lambda with captures (its captures would die before it runs): pass
  // `object->run()` with the object kept alive by the coroutine's arguments.
  TaskId spawn(std::string name, std::string group, awaitable<void> body);

  std::vector<TaskInfo> tasks() const;
  std::size_t size() const { return tasks_.size(); }
  std::size_t group_size(std::string_view group) const;

  // Each returns how many tasks the request reached.
  bool cancel(TaskId id, asio::cancellation_type type = asio::cancellation_type::terminal);
  std::size_t cancel_group(std::string_view group,
                           asio::cancellation_type type = asio::cancellation_type::terminal);
  std::size_t cancel_all(asio::cancellation_type type = asio::cancellation_type::terminal);

  // Waits until every task (or every task of `group`) has ended, or the
  // deadline passes; returns the tasks still running then (empty: all ended).
  awaitable<std::vector<TaskInfo>> join(Deadline deadline);
  awaitable<std::vector<TaskInfo>> join_group(std::string group, Deadline deadline);

  // Tasks that ended by an exception other than cancellation.
  std::uint64_t failures() const { return failures_; }
  // Tasks that ended after a cancellation request reached them.
  std::uint64_t cancelled() const { return cancelled_; }

 private:
  struct Entry {
    TaskInfo info;
    asio::cancellation_signal signal;
  };

  awaitable<void> run_task(TaskId id, awaitable<void> body);
  void finish(TaskId id);
  bool emit(Entry& entry, asio::cancellation_type type);

  asio::any_io_executor executor_;
  std::map<TaskId, std::unique_ptr<Entry>> tasks_;
  Notifier task_ended_;
  TaskId next_id_ = 1;
  std::uint64_t failures_ = 0;
  std::uint64_t cancelled_ = 0;
};

}  // namespace mooring::runtime
