// What peers make mooring hold, across all its WebSocket connections:
// the messages being received, those waiting for their reply
// (chat::Conversation) and the frames waiting to be sent. Each
// connection has bounds of its own (max_message_bytes, send_queue_bytes);
// this one bounds their sum, so that ten thousand connections each holding an
// unfinished message of a megabyte cannot take ten gigabytes.
//
// - A connection's holdings are a Share: it adds to the budget while it lives
//   and gives everything back when it is destroyed, however the connection
//   ended.
// - grow_to() refuses to go past the limit (a message being received: its
//   connection is then closed with 1013); set() never refuses (frames already
//   made must go out; the owner waits for room before making more). Past the
//   limit, connections whose frames wait unsent are closed as slow consumers
//   (WsConnection::shed_if_over_budget), and give back what they hold.
// - Messages being received leave kept_for_sending() of the limit free:
//   the rest is kept for what is sent (a reconnect's backlog), so that
//   clients holding unfinished messages cannot stop replies going out.
// - One budget for the process (buffer_budget()); safe to use from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <utility>

namespace mooring::net {

class BufferBudget {
 public:
  static constexpr std::size_t default_limit = 256 * 1024 * 1024;
  // What grow_to() for a message being received keeps free: an eighth.
  std::size_t kept_for_sending() const { return limit() / 8; }

  explicit BufferBudget(std::size_t limit = default_limit) : limit_(limit) {}
  BufferBudget(const BufferBudget&) = delete;
  BufferBudget& operator=(const BufferBudget&) = delete;

  std::size_t limit() const { return limit_.load(std::memory_order_relaxed); }
  std::size_t used() const { return used_.load(std::memory_order_relaxed); }
  // A lower limit refuses growth from then on; nothing held is taken back.
  void set_limit(std::size_t limit) { limit_.store(limit, std::memory_order_relaxed); }
  bool has_room(std::size_t more) const { return fits(used(), more); }

  class Share {
   public:
    Share() = default;
    explicit Share(BufferBudget& budget) : budget_(&budget) {}
    Share(Share&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
    Share& operator=(Share&& other) noexcept {
      if (this != &other) {
        set(0);
        budget_ = std::exchange(other.budget_, nullptr);
        bytes_ = std::exchange(other.bytes_, 0);
      }
      return *this;
    }
    ~Share() { set(0); }

    std::size_t bytes() const { return bytes_; }
    // Holds `bytes` from now on, whatever the budget's limit.
    void set(std::size_t bytes) {
      // Unsigned arithmetic: a smaller holding subtracts by wrapping around.
      if (budget_ && bytes != bytes_)
        budget_->used_.fetch_add(bytes - bytes_, std::memory_order_relaxed);
      bytes_ = bytes;
    }
    // Holds `bytes`, unless that is more than now and the budget has no room
    // for the difference with `keep_free` bytes still free after it: then
    // nothing changes and the answer is false.
    bool grow_to(std::size_t bytes, std::size_t keep_free = 0) {
      if (!budget_ || bytes <= bytes_) {
        set(bytes);
        return true;
      }
      const std::size_t more = bytes - bytes_;
      if (more > std::size_t(-1) - keep_free) return false;
      auto used = budget_->used();
      do {
        if (!budget_->fits(used, more + keep_free)) return false;
      } while (!budget_->used_.compare_exchange_weak(used, used + more,
                                                     std::memory_order_relaxed));
      bytes_ = bytes;
      return true;
    }

   private:
    BufferBudget* budget_ = nullptr;
    std::size_t bytes_ = 0;
  };

 private:
  bool fits(std::size_t used, std::size_t more) const {
    const auto limit = this->limit();
    return used <= limit && more <= limit - used;
  }

  std::atomic<std::size_t> limit_;
  std::atomic<std::size_t> used_{0};
};

// The process's budget, for every WebSocket connection.
BufferBudget& buffer_budget();

}  // namespace mooring::net
