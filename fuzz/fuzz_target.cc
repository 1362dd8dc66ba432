// SPDX-License-Identifier: Apache-2.0
// One libFuzzer target: LYCHEE_FUZZ_TARGET (a compile definition, e.g. "openai_request") picks
// the check in fuzz_checks.h. A problem prints the check's words and aborts, so libFuzzer keeps
// the input as a crash (crash-<sha1>) like any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz/fuzz_checks.h"

#ifndef LYCHEE_FUZZ_TARGET
#error "define LYCHEE_FUZZ_TARGET"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const lychee::fuzz::CheckResult result = lychee::fuzz::Check(
      LYCHEE_FUZZ_TARGET, std::string_view(reinterpret_cast<const char*>(data), size));
  if (!result.problem.empty()) {
    std::fprintf(stderr, "lychee fuzz target %s: %s\n", LYCHEE_FUZZ_TARGET, result.problem.c_str());
    std::abort();
  }
  return 0;
}
