// SPDX-License-Identifier: Apache-2.0
// Issues a workload through a Driver: open loop (each request at its planned arrival time, on
// its own thread, whether or not earlier ones finished — optionally capped at max_concurrency)
// or closed loop (`concurrency` worker threads, each sending its next request as soon as the
// previous one ends). A --duration stops issuing new requests once it has passed; requests in
// flight run to their end (or their deadline). Records come back in request order.
#pragma once

#include <cstdint>
#include <vector>

#include "loadtest/driver.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace lychee::loadtest {

struct RunOptions {
  int64_t concurrency = 0;      // > 0: closed loop with this many workers
  int64_t max_concurrency = 0;  // open loop: at most this many in flight (0: no cap)
  double duration_seconds = 0;  // > 0: stop issuing after this long
};

struct RunResult {
  std::vector<RequestRecord> records;  // issued requests only, by index
  double duration_seconds = 0.0;       // run start → last request done
};

RunResult RunWorkload(Driver& driver, const std::vector<PlannedRequest>& workload,
                      const RequestOptions& request_options, const RunOptions& run_options);

}  // namespace lychee::loadtest
