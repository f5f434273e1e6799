// TOML configuration validation: any text yields a valid Config or a list of
// problems, never a crash; an accepted configuration can be compared with the
// defaults and its problems described.
#include "app/config.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <variant>

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "config: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mooring::app;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ConfigResult result = parse_config(text);
  if (const auto* config = std::get_if<ConfigPtr>(&result)) {
    require(*config != nullptr, "parse_config returned a null configuration");
    (void)changed_keys(*default_config(), **config);
  } else {
    const auto& errors = std::get<std::vector<ConfigError>>(result);
    require(!errors.empty(), "parse_config refused the text without saying why");
    for (const auto& error : errors)
      require(!error.describe("fuzz.toml").empty(), "an error describes itself as nothing");
  }
  return 0;
}
