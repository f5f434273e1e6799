#include "runtime/supervisor.hpp"

#include "runtime/cancellation.hpp"
#include "runtime/exceptions.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <utility>

namespace mooring::runtime {

Supervisor::Supervisor(IoExecutor executor)
    : io_executor_(executor), executor_(executor), task_ended_(executor_) {}

Supervisor::~Supervisor() {
  // A task left behind here would resume into a dead supervisor; cancel what
  // remains so that, if its io_context still runs, it ends promptly.
  cancel_all(asio::cancellation_type::terminal);
  self_.reset();  // an adopted task's handle, ended later, finds no supervisor
}

AdoptedTask::AdoptedTask(AdoptedTask&& other) noexcept
    : supervisor_(std::move(other.supervisor_)), id_(std::exchange(other.id_, 0)) {}

AdoptedTask& AdoptedTask::operator=(AdoptedTask&& other) noexcept {
  if (this != &other) {
    release(true);
    supervisor_ = std::move(other.supervisor_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

AdoptedTask::~AdoptedTask() { release(false); }

void AdoptedTask::end() { release(true); }

void AdoptedTask::release(bool wake) {
  const TaskId id = std::exchange(id_, 0);
  if (id == 0) return;
  if (auto supervisor = supervisor_.lock()) (*supervisor)->finish(id, wake);
  supervisor_.reset();
}

Supervisor::Entry& Supervisor::add(std::string name, std::string group) {
  const TaskId id = next_id_++;
  auto entry = std::make_unique<Entry>();
  entry->info = TaskInfo{id, std::move(name), std::move(group), Clock::now(), false};
  return *tasks_.emplace(id, std::move(entry)).first->second;
}

AdoptedTask Supervisor::adopt(std::string name, std::string group,
                              std::function<void(asio::cancellation_type)> on_cancel) {
  auto& entry = add(std::move(name), std::move(group));
  entry.on_cancel = std::move(on_cancel);
  return AdoptedTask(self_, entry.info.id);
}

TaskId Supervisor::spawn(std::string name, std::string group, awaitable<void> body) {
  auto& entry = add(std::move(name), std::move(group));
  const TaskId id = entry.info.id;
  asio::co_spawn(executor_, run_task(id, std::move(body)),
                 asio::bind_cancellation_slot(entry.signal.slot(),
                                              [this, id](std::exception_ptr) { finish(id); }));
  // Spawned after everything was cancelled (a task a cancelled one started
  // while it ended): cancelled as well, not left to be abandoned.
  if (cancelled_all_) emit(entry, *cancelled_all_);
  return id;
}

namespace {
Counter& task_failures() {
  static Counter& counter = metrics().counter(
      "mooring_task_failures_total", "Background tasks that ended by an unexpected exception.");
  return counter;
}
}  // namespace

awaitable<void> Supervisor::run_task(TaskId id, awaitable<void> body) {
  // Let the graceful (total) stage reach the task, not only the terminal one.
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  try {
    co_await std::move(body);
  } catch (const boost::system::system_error& e) {
    if (!is_cancellation(e.code())) {
      ++failures_;
      task_failures().inc();
      auto it = tasks_.find(id);
      log::error("task {} failed: {}", it == tasks_.end() ? "?" : it->second->info.name,
                 elide(e.what()));
    }
  } catch (const std::exception& e) {
    ++failures_;
    task_failures().inc();
    auto it = tasks_.find(id);
    log::error("task {} failed: {}", it == tasks_.end() ? "?" : it->second->info.name,
               elide(e.what()));
  } catch (...) {
    ++failures_;
    task_failures().inc();
    auto it = tasks_.find(id);
    log::error("task {} failed with an unknown exception",
               it == tasks_.end() ? "?" : it->second->info.name);
  }
}

void Supervisor::finish(TaskId id, bool wake) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  if (it->second->info.cancel_requested) ++cancelled_;
  tasks_.erase(it);
  if (wake) task_ended_.notify_all();
}

std::vector<TaskInfo> Supervisor::tasks() const {
  std::vector<TaskInfo> out;
  out.reserve(tasks_.size());
  for (const auto& [id, entry] : tasks_) out.push_back(entry->info);
  return out;
}

const TaskInfo* Supervisor::task(TaskId id) const {
  auto it = tasks_.find(id);
  return it != tasks_.end() ? &it->second->info : nullptr;
}

std::size_t Supervisor::group_size(std::string_view group) const {
  std::size_t n = 0;
  for (const auto& [id, entry] : tasks_) n += entry->info.group == group ? 1 : 0;
  return n;
}

bool Supervisor::emit(Entry& entry, asio::cancellation_type type) {
  entry.info.cancel_requested = true;
  if (entry.on_cancel) {
    // A copy: the call may end the task, and its entry with it. Nothing
    // escapes to the caller (a destructor among them, ~Supervisor).
    auto on_cancel = entry.on_cancel;
    try {
      on_cancel(type);
    } catch (...) {
      log::error("cancelling task {} failed: {}", entry.info.id, describe_current_exception());
    }
  } else {
    entry.signal.emit(type);
  }
  return true;
}

bool Supervisor::cancel(TaskId id, asio::cancellation_type type) {
  auto it = tasks_.find(id);
  return it != tasks_.end() && emit(*it->second, type);
}

std::size_t Supervisor::cancel_group(std::string_view group, asio::cancellation_type type) {
  // emit() may complete a task synchronously and erase it from tasks_, so
  // collect the ids first.
  std::vector<TaskId> ids;
  for (const auto& [id, entry] : tasks_)
    if (entry->info.group == group) ids.push_back(id);
  std::size_t n = 0;
  for (auto id : ids) n += cancel(id, type) ? 1 : 0;
  return n;
}

std::size_t Supervisor::cancel_all(asio::cancellation_type type) {
  cancelled_all_ = type;
  std::vector<TaskId> ids;
  for (const auto& [id, entry] : tasks_) ids.push_back(id);
  std::size_t n = 0;
  for (auto id : ids) n += cancel(id, type) ? 1 : 0;
  return n;
}

awaitable<std::vector<TaskInfo>> Supervisor::join(Deadline deadline) {
  while (!tasks_.empty() && !deadline.passed()) co_await task_ended_.wait_until(deadline);
  co_return tasks();
}

awaitable<std::vector<TaskInfo>> Supervisor::join_group(std::string group, Deadline deadline) {
  while (group_size(group) > 0 && !deadline.passed()) co_await task_ended_.wait_until(deadline);
  std::vector<TaskInfo> left;
  for (const auto& [id, entry] : tasks_)
    if (entry->info.group == group) left.push_back(entry->info);
  co_return left;
}

}  // namespace mooring::runtime
