// SPDX-License-Identifier: Apache-2.0
// Moving one request's engine events to its HTTP client: as Server-Sent Events (PumpSse) or
// gathered for one JSON response (CollectAll). Both run on the request's own worker thread
// (openai_gateway.cc), never on a Beast I/O thread: they block in TokenStream::Next, for at most
// `poll_interval` at a time so that they notice a departed client or a stopping gateway.
//
// SSE framing: each chunk is `data: <json>\n\n`, the stream ends with `data: [DONE]\n\n` and
// then the chunked body ends. While no event comes for `ping_interval` (a long prefill, a full
// queue), a comment line `: ping\n\n` goes out: clients ignore it, and a write to a closed
// socket is how the HTTP server learns that the client left (it does not read the socket while
// a response is in progress), which then aborts the request (OnClientGone in the gateway).
// Backpressure: while more than `max_pending_bytes` wait to be written, the pump stops reading
// the TokenStream, so the engine coalesces events there (bounded) instead of bytes piling up
// here; a client that stops reading altogether hits the server's write timeout and is gone.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "engine/token_stream.h"
#include "server/http/http_types.h"
#include "server/openai/openai_response.h"

namespace lychee::openai {

struct PumpOptions {
  absl::Duration poll_interval = absl::Milliseconds(100);
  absl::Duration ping_interval = absl::Seconds(5);
  size_t max_pending_bytes = size_t{1} << 20;
  // Polled between reads; true ends the pump (the gateway is being destroyed).
  std::function<bool()> stopping;
};

inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
inline constexpr std::string_view kSsePing = ": ping\n\n";
std::string SseData(const Json& chunk);

enum class PumpEnd {
  kFinished,    // the final event was sent (or gathered)
  kClientGone,  // the client left or the server closed the connection
  kStopped,     // options.stopping() said so
};

// Streams `stream` through `builder` to `writer`, which must have started an SSE stream (the
// gateway sends the headers and builder.Begin() first). Ends the response on kFinished.
PumpEnd PumpSse(TokenStream& stream, ResponseBuilder& builder, http::ResponseWriter& writer,
                const PumpOptions& options);

// Feeds every event of `stream` to builder.Add until the final one.
PumpEnd CollectAll(TokenStream& stream, ResponseBuilder& builder,
                   const http::ResponseWriter& writer, const PumpOptions& options);

}  // namespace lychee::openai
