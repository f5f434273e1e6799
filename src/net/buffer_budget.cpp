#include "net/buffer_budget.hpp"

namespace mooring::net {

BufferBudget& buffer_budget() {
  // Trivially destructible: a connection ending during exit still finds it.
  static BufferBudget budget;
  return budget;
}

}  // namespace mooring::net
