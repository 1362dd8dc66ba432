// SPDX-License-Identifier: Apache-2.0
// Response side of the OpenAI-compatible API: engine events (GenerationOutput) → the JSON of
// /v1/completions ("text_completion") and /v1/chat/completions ("chat.completion" and, streamed,
// "chat.completion.chunk"), with usage and logprobs in OpenAI's two logprobs shapes.
//
// A ResponseBuilder is made per request (CompletionsResponseBuilder / ChatResponseBuilder) and is
// fed that request's events in order by one thread (the request's worker, openai_gateway.cc):
//   streaming:     Begin() → OnEvent(e)... → each returns the chunks to send as SSE "data:" lines
//   non-streaming: Add(e)... → Complete() → the whole response
// It holds per-request state (text offsets, the previous token for logprob token texts) and is
// not thread-safe. The tokenizer only renders logprob token strings; it must outlive the builder.
//
// Finish reasons: "stop" (EOS, stop string or stop token), "length" (max_tokens or the context),
// "abort" (the engine aborted the request: deadline, shutdown; vLLM's spelling). An engine error
// (kError) is, when streaming, an `{"error": {...}}` data line after the chunks already sent
// (vLLM's behaviour); non-streaming, the whole response becomes the OpenAI error. Streams end
// with `data: [DONE]` either way (sse_stream.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/request.h"
#include "server/openai/json_fields.h"

namespace lychee {
class Tokenizer;
}

namespace lychee::openai {

// The response fields every chunk repeats.
struct ResponseMeta {
  std::string id;  // "cmpl-…" / "chatcmpl-…"
  int64_t created = 0;
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  // Set from the final event when the request ran a sparse policy (our extension).
  std::optional<PolicyReport> policy_report;
};
// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
// {"cached_tokens"}}, plus "policy_report" (PolicyReportJson) when set.
Json UsageJson(const Usage& usage);

// {"policy", "max_bound", "mean_bound", "max_exact", "audited_steps", "kv_read_fraction",
//  "widenings", "head_selections", "reused", "dense_fallbacks", "cache_corrections",
//  "selection_seconds"}: engine/request.h's PolicyReport, as gRPC's PolicyReport message.
Json PolicyReportJson(const PolicyReport& report);

// "stop", "length", "abort" (and "error"), or null while not finished.
Json FinishReasonJson(FinishReason reason);

// Renders logprobs for the tokens of one request: token strings decoded in context (the token
// before), as vLLM does, so SentencePiece's "▁time" reads " time". -inf becomes -9999.0 (JSON has
// no infinity; vLLM's value).
class LogprobRenderer {
 public:
  // `top_n`: alternatives to show per token; `context_token` is the last prompt token.
  LogprobRenderer(const Tokenizer& tokenizer, int top_n, std::optional<int32_t> context_token);

  // Completions' legacy shape: {"tokens", "token_logprobs", "top_logprobs" (token → logprob;
  // the top_n best plus the chosen token), "text_offset"}. `text_offset` advances.
  Json Completion(const std::vector<OutputLogprob>& logprobs, int64_t& text_offset);
  // Chat's shape: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
  Json Chat(const std::vector<OutputLogprob>& logprobs);

  std::string TokenText(int32_t token) const;

 private:
  std::string TokenTextAfter(int32_t context, int32_t token) const;

  const Tokenizer& tokenizer_;
  const int top_n_;
  std::optional<int32_t> previous_;  // the token before the next one rendered
};

// Per-request response state; see the file comment.
class ResponseBuilder {
 public:
  virtual ~ResponseBuilder() = default;

  // Streaming.
  virtual std::vector<Json> Begin() = 0;
  virtual std::vector<Json> OnEvent(const GenerationOutput& event) = 0;

  // Non-streaming. Complete() is the response body, or the engine's error (non-OK status).
  void Add(const GenerationOutput& event);
  virtual Json Complete() = 0;
  const absl::Status& error() const { return error_; }
  // Token counts so far, from the events seen (the access log reports them).
  const Usage& usage() const { return usage_; }

 protected:
  ResponseBuilder(ResponseMeta meta, bool include_usage, bool continuous_usage)
      : meta_(std::move(meta)),
        include_usage_(include_usage),
        continuous_usage_(continuous_usage) {}

  // Usage from an event's cumulative counters.
  void TrackUsage(const GenerationOutput& event);
  // The chunk that closes a stream: usage (when asked), or an error object for kError.
  void AppendTail(const GenerationOutput& event, const char* object, std::vector<Json>& chunks);
  Json Head(const char* object) const;

  ResponseMeta meta_;
  const bool include_usage_;
  const bool continuous_usage_;
  Usage usage_;
  // Accumulated by Add().
  std::string text_;
  std::vector<OutputLogprob> logprobs_;
  FinishReason finish_reason_ = FinishReason::kNone;
  std::string matched_stop_;
  absl::Status error_;
};

class CompletionsResponseBuilder final : public ResponseBuilder {
 public:
  // `echo_text`: the prompt's text when echo is on (sent first, and put before the output);
  // `logprobs`: top alternatives per token, nullopt for none.
  CompletionsResponseBuilder(ResponseMeta meta, const Tokenizer& tokenizer,
                             std::optional<int> logprobs, std::optional<int32_t> context_token,
                             std::string echo_text, bool include_usage, bool continuous_usage);

  std::vector<Json> Begin() override;
  std::vector<Json> OnEvent(const GenerationOutput& event) override;
  Json Complete() override;

 private:
  Json Chunk(std::string text, Json logprobs, const GenerationOutput* finished) const;

  const std::optional<int> logprobs_n_;
  LogprobRenderer renderer_;
  const std::string echo_text_;
  int64_t text_offset_ = 0;  // where the next token's text starts (logprobs text_offset)
};

class ChatResponseBuilder final : public ResponseBuilder {
 public:
  // `top_logprobs`: nullopt when logprobs is false.
  ChatResponseBuilder(ResponseMeta meta, const Tokenizer& tokenizer,
                      std::optional<int> top_logprobs, std::optional<int32_t> context_token,
                      bool include_usage, bool continuous_usage);

  std::vector<Json> Begin() override;
  std::vector<Json> OnEvent(const GenerationOutput& event) override;
  Json Complete() override;

 private:
  Json Chunk(Json delta, Json logprobs, const GenerationOutput* finished) const;

  const std::optional<int> top_logprobs_;
  LogprobRenderer renderer_;
};

}  // namespace lychee::openai
