// SPDX-License-Identifier: Apache-2.0
#include "engine/live_request.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace lychee {
namespace {

// Log-softmax value of `token` under `logits` (the raw row, before any processing).
float TokenLogprobOf(absl::Span<const float> logits, int32_t token) {
  float max_logit = -INFINITY;
  for (float x : logits) max_logit = std::max(max_logit, x);
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  return static_cast<float>(logits[token] - max_logit - std::log(sum));
}

uint64_t SeedFor(const SamplingParams& params, uint64_t fallback) {
  return params.has_seed ? params.seed : fallback;
}

}  // namespace

LiveRequest::LiveRequest(GenerationRequest request, TokenStreamPtr stream,
                         const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids,
                         int64_t max_model_len, uint64_t fallback_seed, absl::Time arrival)
    : request_(std::move(request)),
      stream_(std::move(stream)),
      tokenizer_(tokenizer),
      eos_ids_(eos_ids),
      max_model_len_(max_model_len),
      seed_(SeedFor(request_.sampling, fallback_seed)),
      sampler_(request_.sampling, seed_),
      detokenizer_(tokenizer, request_.skip_special_tokens, request_.prompt),
      stop_matcher_(request_.stop),
      arrival_(arrival) {}

int32_t LiveRequest::SampleNext(absl::Span<float> logits) {
  if (request_.top_logprobs > 0) {
    OutputLogprob logprob;
    logprob.top = TopLogprobs(logits, request_.top_logprobs);
    next_logprob_ = std::move(logprob);
  }
  // Keep the raw row for the chosen token's logprob: Sample() overwrites `logits`.
  std::vector<float> raw;
  if (next_logprob_) raw.assign(logits.begin(), logits.end());
  const int32_t token = sampler_.Sample(logits, request_.prompt, output_);
  if (next_logprob_) {
    next_logprob_->token_id = token;
    next_logprob_->logprob = TokenLogprobOf(raw, token);
  }
  return token;
}

DeviceSamplingInput LiveRequest::DeviceSampling(int64_t vocab) {
  DeviceSamplingInput in;
  in.params = request_.sampling;
  in.seed = seed_;
  in.step = static_cast<int64_t>(output_.size());
  in.top_logprobs = request_.top_logprobs;
  const SamplingParams& p = request_.sampling;
  if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    if (!penalty_tokens_) penalty_tokens_.emplace(p, request_.prompt, output_, vocab);
    in.penalty_ids = penalty_tokens_->ids();
    in.penalty_counts = penalty_tokens_->counts();
  }
  return in;
}

void LiveRequest::SetDeviceSample(int32_t token, float logprob,
                                  absl::Span<const TokenLogprob> top) {
  if (request_.top_logprobs <= 0) return;
  OutputLogprob out;
  out.token_id = token;
  out.logprob = logprob;
  for (size_t i = 0; i < top.size() && static_cast<int32_t>(i) < request_.top_logprobs; ++i) {
    if (top[i].token < 0) break;
    out.top.push_back(top[i]);
  }
  next_logprob_ = std::move(out);
}

void LiveRequest::MarkScheduled(absl::Time now) {
  if (!first_scheduled_) first_scheduled_ = now;
}

void LiveRequest::AppendText(const std::string& piece) {
  if (text_stopped_ || piece.empty()) return;
  StopStringMatcher::Result shown = stop_matcher_.Push(piece);
  pending_text_ += shown.text;
  if (shown.stopped) {
    text_stopped_ = true;
    matched_stop_ = std::move(shown.matched);
    if (request_.include_stop_str_in_output) pending_text_ += matched_stop_;
  }
}

void LiveRequest::FlushText() {
  AppendText(detokenizer_.Flush());
  if (!text_stopped_) pending_text_ += stop_matcher_.Flush();
}

void LiveRequest::AppendToken(int32_t token, absl::Time now) {
  if (finished()) return;
  if (last_token_) last_itl_ = absl::ToDoubleSeconds(now - *last_token_);
  if (!first_token_) first_token_ = now;
  last_token_ = now;

  output_.push_back(token);
  if (penalty_tokens_) penalty_tokens_->Append(token);
  pending_tokens_.push_back(token);
  if (next_logprob_) {
    pending_logprobs_.push_back(std::move(*next_logprob_));
    next_logprob_.reset();
  }

  const int64_t generated = static_cast<int64_t>(output_.size());
  const bool may_stop = generated >= request_.min_tokens;
  const bool is_eos =
      !request_.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
  const bool is_stop_id = std::find(request_.stop_token_ids.begin(), request_.stop_token_ids.end(),
                                    token) != request_.stop_token_ids.end();
  if (may_stop && (is_eos || is_stop_id)) {
    // The stop token's own text is not part of the output (it is usually special anyway).
    if (is_stop_id && !is_eos) matched_stop_ = tokenizer_.Decode({token}, false);
    FlushText();
    FinishInternal(FinishReason::kStop, now);
    return;
  }
  AppendText(detokenizer_.Push(token));
  if (text_stopped_ && may_stop) {
    FinishInternal(FinishReason::kStop, now);
    return;
  }
  const int64_t total = static_cast<int64_t>(request_.prompt.size()) + generated;
  if (generated >= request_.max_tokens || total >= max_model_len_) {
    FlushText();
    FinishInternal(text_stopped_ ? FinishReason::kStop : FinishReason::kLength, now);
  }
}

void LiveRequest::Finish(FinishReason reason, absl::Time now, absl::Status error) {
  if (finished()) return;
  error_ = std::move(error);
  FinishInternal(reason, now);
}

void LiveRequest::FinishInternal(FinishReason reason, absl::Time now) {
  finish_reason_ = reason;
  finished_at_ = now;
}

GenerationOutput LiveRequest::TakeEvent() {
  GenerationOutput out;
  out.token_ids = std::move(pending_tokens_);
  out.text = std::move(pending_text_);
  out.logprobs = std::move(pending_logprobs_);
  pending_tokens_.clear();
  pending_text_.clear();
  pending_logprobs_.clear();
  out.prompt_tokens = static_cast<int64_t>(request_.prompt.size());
  out.completion_tokens = static_cast<int64_t>(output_.size());
  out.cached_tokens = cached_tokens_;
  if (finished()) {
    final_sent_ = true;
    out.finished = true;
    out.finish_reason = finish_reason_;
    out.matched_stop = matched_stop_;
    out.error = error_;
    const absl::Time scheduled = first_scheduled_.value_or(finished_at_);
    out.timings.queue_seconds = absl::ToDoubleSeconds(scheduled - arrival_);
    out.timings.first_token_seconds =
        first_token_ ? absl::ToDoubleSeconds(*first_token_ - arrival_) : 0.0;
    out.timings.e2e_seconds = absl::ToDoubleSeconds(finished_at_ - arrival_);
  }
  return out;
}

}  // namespace lychee
