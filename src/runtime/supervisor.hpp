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
//
// A task need not be a coroutine: work that runs as a chain of completion
// handlers (an upgraded WebSocket connection, which an idle host holds by the
// thousand) is adopted instead. It is listed, cancelled and joined like the
// others; a cancellation request calls the function it was adopted with, and
// the task ends when its handle is ended or destroyed.
#pragma once

#include "runtime/asio.hpp"
#include "runtime/time.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
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

class Supervisor;

// The handle of an adopted task: the task is listed until end() is called or
// the handle is destroyed. Move-only; empty once moved from or ended.
class AdoptedTask {
 public:
  AdoptedTask() = default;
  AdoptedTask(AdoptedTask&& other) noexcept;
  AdoptedTask& operator=(AdoptedTask&& other) noexcept;
  AdoptedTask(const AdoptedTask&) = delete;
  AdoptedTask& operator=(const AdoptedTask&) = delete;
  // Ends the task without waking a join(): for a handle destroyed while its
  // io_context is torn down, when nothing that waits may be touched. Work
  // that ends normally calls end() (or assigns the handle a new task).
  ~AdoptedTask();

  // Ends the task: it leaves the list, and a join() waiting for it wakes up.
  void end();
  TaskId id() const { return id_; }
  explicit operator bool() const { return id_ != 0; }

 private:
  friend class Supervisor;
  AdoptedTask(std::weak_ptr<Supervisor*> supervisor, TaskId id)
      : supervisor_(std::move(supervisor)), id_(id) {}
  void release(bool wake);

  std::weak_ptr<Supervisor*> supervisor_;  // expired once the supervisor is gone
  TaskId id_ = 0;
};

class Supervisor {
 public:
  explicit Supervisor(IoExecutor executor);
  // Tasks hold a pointer to their supervisor: destroy it only after join()
  // reported no stragglers, or after the io_context that runs them is gone.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  const asio::any_io_executor& executor() const { return executor_; }
  // The same, with its type known (runtime/asio.hpp).
  const IoExecutor& io_executor() const { return io_executor_; }

  // Starts `body` on the supervisor's executor. `body` must not be a coroutine
  // lambda with captures (its captures would die before it runs): pass
  // `object->run()` with the object kept alive by the coroutine's arguments.
  TaskId spawn(std::string name, std::string group, awaitable<void> body);

  // Lists work that is not a coroutine as a task. `on_cancel` runs on the
  // supervisor's thread for every cancellation request that reaches the task
  // (with its type); it may end the task at once or later. It must not hold
  // the work alive: the supervisor keeps it until the task ends.
  AdoptedTask adopt(std::string name, std::string group,
                    std::function<void(asio::cancellation_type)> on_cancel);

  std::vector<TaskInfo> tasks() const;
  // The task `id`, or nullptr when none runs with it.
  const TaskInfo* task(TaskId id) const;
  std::size_t size() const { return tasks_.size(); }
  std::size_t group_size(std::string_view group) const;

  // Each returns how many tasks the request reached.
  bool cancel(TaskId id, asio::cancellation_type type = asio::cancellation_type::terminal);
  std::size_t cancel_group(std::string_view group,
                           asio::cancellation_type type = asio::cancellation_type::terminal);
  // Tasks spawned after it are cancelled the same way as they start.
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
  friend class AdoptedTask;

  struct Entry {
    TaskInfo info;
    asio::cancellation_signal signal;  // a coroutine task's
    std::function<void(asio::cancellation_type)> on_cancel;  // an adopted task's
  };

  // A new task's entry, listed from now on.
  Entry& add(std::string name, std::string group);
  awaitable<void> run_task(TaskId id, awaitable<void> body);
  void finish(TaskId id, bool wake = true);
  bool emit(Entry& entry, asio::cancellation_type type);

  IoExecutor io_executor_;
  asio::any_io_executor executor_;
  std::map<TaskId, std::unique_ptr<Entry>> tasks_;
  Notifier task_ended_;
  TaskId next_id_ = 1;
  std::uint64_t failures_ = 0;
  std::uint64_t cancelled_ = 0;
  std::optional<asio::cancellation_type> cancelled_all_;
  // What an adopted task's handle holds: reset when the supervisor goes.
  std::shared_ptr<Supervisor*> self_ = std::make_shared<Supervisor*>(this);
};

}  // namespace mooring::runtime
