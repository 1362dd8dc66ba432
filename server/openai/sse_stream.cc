// SPDX-License-Identifier: Apache-2.0
// SSE pump and event collection (see sse_stream.h).
#include "server/openai/sse_stream.h"

#include <optional>
#include <thread>

#include "server/openai/api_error.h"

namespace lychee::openai {

std::string SseData(const Json& chunk) {
  std::string out = "data: ";
  out += Dump(chunk);
  out += "\n\n";
  return out;
}

PumpEnd PumpSse(TokenStream& stream, ResponseBuilder& builder, http::ResponseWriter& writer,
                const PumpOptions& options) {
  absl::Time last_write = absl::Now();
  for (;;) {
    if (writer.client_gone()) return PumpEnd::kClientGone;
    if (options.stopping && options.stopping()) return PumpEnd::kStopped;
    if (writer.pending_bytes() > options.max_pending_bytes) {
      // The client reads slowly: leave events in the TokenStream, where they coalesce.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      last_write = absl::Now();
      continue;
    }
    std::optional<GenerationOutput> event = stream.Next(absl::Now() + options.poll_interval);
    if (!event.has_value()) {
      if (absl::Now() - last_write >= options.ping_interval) {
        if (!writer.Write(std::string(kSsePing))) return PumpEnd::kClientGone;
        last_write = absl::Now();
      }
      continue;
    }
    std::string out;
    for (const Json& chunk : builder.OnEvent(*event)) out += SseData(chunk);
    if (event->finished) out += kSseDone;
    if (!out.empty()) {
      if (!writer.Write(std::move(out))) return PumpEnd::kClientGone;
      last_write = absl::Now();
    }
    if (event->finished) {
      writer.SetTokenCounts(builder.usage().prompt_tokens, builder.usage().completion_tokens);
      writer.End();
      return PumpEnd::kFinished;
    }
  }
}

PumpEnd CollectAll(TokenStream& stream, ResponseBuilder& builder,
                   const http::ResponseWriter& writer, const PumpOptions& options) {
  for (;;) {
    if (writer.client_gone()) return PumpEnd::kClientGone;
    if (options.stopping && options.stopping()) return PumpEnd::kStopped;
    std::optional<GenerationOutput> event = stream.Next(absl::Now() + options.poll_interval);
    if (!event.has_value()) continue;
    builder.Add(*event);
    if (event->finished) return PumpEnd::kFinished;
  }
}

}  // namespace lychee::openai
