// SPDX-License-Identifier: Apache-2.0
// Logging (spdlog) and invariant checks.
//
// LY_LOG_INFO("loaded {} tensors", n) etc. format with fmt. LY_CHECK(cond) << "why" aborts with
// a message: it is for programming errors only, never for bad input (return a Status instead).
#pragma once

#include <sstream>

#include <spdlog/spdlog.h>

#define LY_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define LY_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LY_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LY_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

namespace lychee::internal {
// Collects the streamed message of a failed check, prints it with the location and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return message_; }

 private:
  std::ostringstream message_;
};
}  // namespace lychee::internal

#define LY_CHECK(cond) \
  if (cond) [[likely]] \
    ;                  \
  else                 \
    ::lychee::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()
