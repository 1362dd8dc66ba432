// SPDX-License-Identifier: Apache-2.0
#include "common/logging.h"

#include <cstdio>
#include <cstdlib>

namespace lychee::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  message_ << file << ":" << line << ": check failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "%s\n", message_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace lychee::internal
