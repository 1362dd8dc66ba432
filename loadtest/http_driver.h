// SPDX-License-Identifier: Apache-2.0
// Driver over the OpenAI HTTP API: POST /v1/completions with the prompt as a list of token ids,
// stream=true, read as Server-Sent Events. Each request opens its own connection (one request in
// flight per connection is how HTTP/1.1 load generators behave) and runs Boost.Beast's async
// operations on a private io_context on the caller's thread, so the deadline (--timeout) bounds
// connect, write and every read.
//
// Token counts come from vLLM's stream_options.continuous_usage_stats (cumulative usage in every
// chunk), because SSE chunks carry text, not ids; a server without it is counted one token per
// non-empty chunk.
#pragma once

#include <cstdint>
#include <string>

#include "loadtest/driver.h"

namespace lychee::loadtest {

class HttpDriver : public Driver {
 public:
  // `address` is host:port.
  explicit HttpDriver(std::string host, std::string port);

  absl::Status Probe(double timeout_seconds) override;
  RequestRecord Send(const PlannedRequest& request, const RequestOptions& options,
                     Clock::time_point run_start) override;

 private:
  std::string host_;
  std::string port_;
};

}  // namespace lychee::loadtest
