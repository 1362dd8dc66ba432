// SPDX-License-Identifier: Apache-2.0
// Response and chunk JSON of the OpenAI-compatible API (see openai_response.h).
#include "server/openai/openai_response.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "model/tokenizer/tokenizer.h"
#include "server/openai/api_error.h"

namespace lychee::openai {
namespace {

// JSON has no -inf; vLLM reports impossible tokens as -9999.0.
double FiniteLogprob(float logprob) {
  return std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0;
}

Json Bytes(const std::string& text) {
  Json bytes = Json::array();
  for (const char c : text) bytes.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return bytes;
}

// The top_n best of `lp` (already best first).
std::vector<TokenLogprob> TopN(const OutputLogprob& lp, int top_n) {
  const size_t n = std::min(lp.top.size(), static_cast<size_t>(std::max(top_n, 0)));
  return std::vector<TokenLogprob>(lp.top.begin(), lp.top.begin() + static_cast<ptrdiff_t>(n));
}

// The double with `value`'s shortest decimal form (0.02f → 0.02, not 0.019999999552965164).
// Monotone, so the report's order (max_exact <= max_bound) survives.
double ShortestDouble(float value) {
  return std::strtod(fmt::format("{}", value).c_str(), nullptr);
}

Json StopReason(const std::string& matched_stop) {
  return matched_stop.empty() ? Json(nullptr) : Json(matched_stop);
}

}  // namespace

Json UsageJson(const Usage& usage) {
  Json json = Json::object();
  json["prompt_tokens"] = usage.prompt_tokens;
  json["completion_tokens"] = usage.completion_tokens;
  json["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  json["prompt_tokens_details"] = {{"cached_tokens", usage.cached_tokens}};
  if (usage.policy_report.has_value())
    json["policy_report"] = PolicyReportJson(*usage.policy_report);
  return json;
}

Json PolicyReportJson(const PolicyReport& report) {
  Json json = Json::object();
  json["policy"] = report.policy;
  json["max_bound"] = ShortestDouble(report.max_bound);
  json["mean_bound"] = report.mean_bound;
  json["max_exact"] = ShortestDouble(report.max_exact);
  json["audited_steps"] = report.audited_steps;
  json["kv_read_fraction"] = report.kv_read_fraction;
  json["widenings"] = report.widenings;
  json["head_selections"] = report.head_selections;
  json["reused"] = report.reused;
  json["dense_fallbacks"] = report.dense_fallbacks;
  json["cache_corrections"] = report.cache_corrections;
  json["selection_seconds"] = report.selection_seconds;
  return json;
}

Json FinishReasonJson(FinishReason reason) {
  if (reason == FinishReason::kNone) return nullptr;
  return std::string(FinishReasonName(reason));
}

// ---------------------------------------------------------------------------------------------
// LogprobRenderer.

LogprobRenderer::LogprobRenderer(const Tokenizer& tokenizer, int top_n,
                                 std::optional<int32_t> context_token)
    : tokenizer_(tokenizer), top_n_(top_n), previous_(context_token) {}

std::string LogprobRenderer::TokenText(int32_t token) const {
  return tokenizer_.Decode({token}, /*skip_special_tokens=*/false);
}

std::string LogprobRenderer::TokenTextAfter(int32_t context, int32_t token) const {
  const std::string before = tokenizer_.Decode({context}, false);
  const std::string both = tokenizer_.Decode({context, token}, false);
  if (both.size() < before.size() || both.compare(0, before.size(), before) != 0) {
    return TokenText(token);  // the context's text changed (half a character): no context
  }
  return both.substr(before.size());
}

Json LogprobRenderer::Completion(const std::vector<OutputLogprob>& logprobs, int64_t& text_offset) {
  Json tokens = Json::array();
  Json token_logprobs = Json::array();
  Json top_logprobs = Json::array();
  Json offsets = Json::array();
  for (const OutputLogprob& lp : logprobs) {
    auto text_of = [&](int32_t token) {
      return previous_ ? TokenTextAfter(*previous_, token) : TokenText(token);
    };
    const std::string text = text_of(lp.token_id);
    tokens.push_back(text);
    token_logprobs.push_back(FiniteLogprob(lp.logprob));
    Json top = Json::object();
    for (const TokenLogprob& candidate : TopN(lp, top_n_)) {
      top[text_of(candidate.token)] = FiniteLogprob(candidate.logprob);
    }
    // vLLM also lists the chosen token (it may be outside the top n when sampling).
    if (!top.contains(text)) top[text] = FiniteLogprob(lp.logprob);
    top_logprobs.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(text.size());
    previous_ = lp.token_id;
  }
  Json json = Json::object();
  json["tokens"] = std::move(tokens);
  json["token_logprobs"] = std::move(token_logprobs);
  json["top_logprobs"] = std::move(top_logprobs);
  json["text_offset"] = std::move(offsets);
  return json;
}

Json LogprobRenderer::Chat(const std::vector<OutputLogprob>& logprobs) {
  Json content = Json::array();
  for (const OutputLogprob& lp : logprobs) {
    auto entry = [&](int32_t token, float logprob) {
      const std::string text = previous_ ? TokenTextAfter(*previous_, token) : TokenText(token);
      Json e = Json::object();
      e["token"] = text;
      e["logprob"] = FiniteLogprob(logprob);
      e["bytes"] = Bytes(text);
      return e;
    };
    Json item = entry(lp.token_id, lp.logprob);
    Json top = Json::array();
    for (const TokenLogprob& candidate : TopN(lp, top_n_)) {
      top.push_back(entry(candidate.token, candidate.logprob));
    }
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
    previous_ = lp.token_id;
  }
  return {{"content", std::move(content)}};
}

// ---------------------------------------------------------------------------------------------
// ResponseBuilder.

void ResponseBuilder::TrackUsage(const GenerationOutput& event) {
  usage_.prompt_tokens = std::max(usage_.prompt_tokens, event.prompt_tokens);
  usage_.completion_tokens = std::max(usage_.completion_tokens, event.completion_tokens);
  usage_.cached_tokens = std::max(usage_.cached_tokens, event.cached_tokens);
  const PolicyReport& report = event.policy_report;
  if (event.finished && !report.policy.empty() && report.policy != "dense") {
    usage_.policy_report = report;
  }
}

void ResponseBuilder::Add(const GenerationOutput& event) {
  TrackUsage(event);
  text_ += event.text;
  logprobs_.insert(logprobs_.end(), event.logprobs.begin(), event.logprobs.end());
  if (event.finished) {
    finish_reason_ = event.finish_reason;
    matched_stop_ = event.matched_stop;
    if (event.finish_reason == FinishReason::kError) {
      error_ =
          event.error.ok() ? absl::InternalError("the engine failed the request") : event.error;
    }
  }
}

Json ResponseBuilder::Head(const char* object) const {
  Json json = Json::object();
  json["id"] = meta_.id;
  json["object"] = object;
  json["created"] = meta_.created;
  json["model"] = meta_.model;
  return json;
}

void ResponseBuilder::AppendTail(const GenerationOutput& event, const char* object,
                                 std::vector<Json>& chunks) {
  if (!event.finished) return;
  if (event.finish_reason == FinishReason::kError) {
    chunks.push_back(ErrorJson(
        event.error.ok() ? absl::InternalError("the engine failed the request") : event.error));
    return;
  }
  if (include_usage_) {
    Json usage = Head(object);
    usage["choices"] = Json::array();
    usage["usage"] = UsageJson(usage_);
    chunks.push_back(std::move(usage));
  }
}

// ---------------------------------------------------------------------------------------------
// Completions.

CompletionsResponseBuilder::CompletionsResponseBuilder(ResponseMeta meta,
                                                       const Tokenizer& tokenizer,
                                                       std::optional<int> logprobs,
                                                       std::optional<int32_t> context_token,
                                                       std::string echo_text, bool include_usage,
                                                       bool continuous_usage)
    : ResponseBuilder(std::move(meta), include_usage, continuous_usage),
      logprobs_n_(logprobs),
      renderer_(tokenizer, logprobs.value_or(0), context_token),
      echo_text_(std::move(echo_text)),
      text_offset_(static_cast<int64_t>(echo_text_.size())) {}

Json CompletionsResponseBuilder::Chunk(std::string text, Json logprobs,
                                       const GenerationOutput* finished) const {
  Json choice = Json::object();
  choice["index"] = 0;
  choice["text"] = std::move(text);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finished ? FinishReasonJson(finished->finish_reason) : Json(nullptr);
  choice["stop_reason"] = finished ? StopReason(finished->matched_stop) : Json(nullptr);
  Json chunk = Head("text_completion");
  chunk["choices"] = Json::array({std::move(choice)});
  if (continuous_usage_) chunk["usage"] = UsageJson(usage_);
  return chunk;
}

std::vector<Json> CompletionsResponseBuilder::Begin() {
  std::vector<Json> chunks;
  if (!echo_text_.empty()) chunks.push_back(Chunk(echo_text_, nullptr, nullptr));
  return chunks;
}

std::vector<Json> CompletionsResponseBuilder::OnEvent(const GenerationOutput& event) {
  TrackUsage(event);
  std::vector<Json> chunks;
  const bool has_logprobs = logprobs_n_.has_value() && !event.logprobs.empty();
  const bool closes = event.finished && event.finish_reason != FinishReason::kError;
  if (!event.text.empty() || has_logprobs || closes) {
    Json logprobs = has_logprobs ? renderer_.Completion(event.logprobs, text_offset_) : Json();
    chunks.push_back(Chunk(event.text, std::move(logprobs), closes ? &event : nullptr));
  }
  AppendTail(event, "text_completion", chunks);
  return chunks;
}

Json CompletionsResponseBuilder::Complete() {
  Json logprobs = nullptr;
  if (logprobs_n_.has_value()) logprobs = renderer_.Completion(logprobs_, text_offset_);
  Json choice = Json::object();
  choice["index"] = 0;
  choice["text"] = echo_text_ + text_;
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = FinishReasonJson(finish_reason_);
  choice["stop_reason"] = StopReason(matched_stop_);
  Json response = Head("text_completion");
  response["choices"] = Json::array({std::move(choice)});
  response["usage"] = UsageJson(usage_);
  return response;
}

// ---------------------------------------------------------------------------------------------
// Chat.

ChatResponseBuilder::ChatResponseBuilder(ResponseMeta meta, const Tokenizer& tokenizer,
                                         std::optional<int> top_logprobs,
                                         std::optional<int32_t> context_token, bool include_usage,
                                         bool continuous_usage)
    : ResponseBuilder(std::move(meta), include_usage, continuous_usage),
      top_logprobs_(top_logprobs),
      renderer_(tokenizer, top_logprobs.value_or(0), context_token) {}

Json ChatResponseBuilder::Chunk(Json delta, Json logprobs, const GenerationOutput* finished) const {
  Json choice = Json::object();
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finished ? FinishReasonJson(finished->finish_reason) : Json(nullptr);
  choice["stop_reason"] = finished ? StopReason(finished->matched_stop) : Json(nullptr);
  Json chunk = Head("chat.completion.chunk");
  chunk["choices"] = Json::array({std::move(choice)});
  if (continuous_usage_) chunk["usage"] = UsageJson(usage_);
  return chunk;
}

std::vector<Json> ChatResponseBuilder::Begin() {
  // OpenAI's first chunk names the role, with empty content.
  return {Chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr)};
}

std::vector<Json> ChatResponseBuilder::OnEvent(const GenerationOutput& event) {
  TrackUsage(event);
  std::vector<Json> chunks;
  const bool has_logprobs = top_logprobs_.has_value() && !event.logprobs.empty();
  const bool closes = event.finished && event.finish_reason != FinishReason::kError;
  if (!event.text.empty() || has_logprobs || closes) {
    Json delta = Json::object();
    if (!event.text.empty()) delta["content"] = event.text;
    Json logprobs = has_logprobs ? renderer_.Chat(event.logprobs) : Json();
    chunks.push_back(Chunk(std::move(delta), std::move(logprobs), closes ? &event : nullptr));
  }
  AppendTail(event, "chat.completion.chunk", chunks);
  return chunks;
}

Json ChatResponseBuilder::Complete() {
  Json message = Json::object();
  message["role"] = "assistant";
  message["content"] = text_;
  Json choice = Json::object();
  choice["index"] = 0;
  choice["message"] = std::move(message);
  choice["logprobs"] = top_logprobs_.has_value() ? renderer_.Chat(logprobs_) : Json(nullptr);
  choice["finish_reason"] = FinishReasonJson(finish_reason_);
  choice["stop_reason"] = StopReason(matched_stop_);
  Json response = Head("chat.completion");
  response["choices"] = Json::array({std::move(choice)});
  response["usage"] = UsageJson(usage_);
  return response;
}

}  // namespace lychee::openai
