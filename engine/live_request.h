// SPDX-License-Identifier: Apache-2.0
// LiveRequest: the engine thread's view of one live request between steps — its sampler, the
// tokens generated so far, streaming detokenization, stop conditions and timings — and the
// events it owes its TokenStream.
//
// Owned and used only by the engine thread. The engine calls, per step in which the request got
// logits: SampleNext(logits) (or, when the runner samples on its device, DeviceSampling() before
// the step and SetDeviceSample(...) after it) → AppendToken(token, now) → (if anything to say)
// TakeEvent() → stream->Push(event). Finish(...) ends it for reasons decided outside (abort, error,
// deadline).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "engine/token_stream.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {

class LiveRequest {
 public:
  // `max_model_len` caps prompt + output; `fallback_seed` seeds requests without a seed.
  // `eos_ids` (owned by the engine) end generation unless the request sets ignore_eos.
  LiveRequest(GenerationRequest request, TokenStreamPtr stream, const Tokenizer& tokenizer,
              const std::vector<int32_t>& eos_ids, int64_t max_model_len, uint64_t fallback_seed,
              absl::Time arrival);

  const GenerationRequest& request() const { return request_; }
  const TokenStreamPtr& stream() const { return stream_; }
  const std::vector<int32_t>& output_tokens() const { return output_; }
  bool finished() const { return finish_reason_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_reason_; }
  absl::Time arrival() const { return arrival_; }

  // Picks the next token from this request's row of logits (overwritten: penalties, filters),
  // recording its logprobs first when the request asked for them.
  int32_t SampleNext(absl::Span<float> logits);

  // Device sampling (ModelRunner::samples_on_device), instead of SampleNext: this request's
  // inputs for its next token (its seed, the draw counter = tokens generated so far, the penalty
  // lists kept incrementally; spans valid until AppendToken), then what the device picked.
  DeviceSamplingInput DeviceSampling(int64_t vocab);
  // Records the device's logprobs for `token` when the request asked for them (`top`: the
  // row's kMaxTopLogprobs entries, best first, token -1 past the end). AppendToken follows.
  void SetDeviceSample(int32_t token, float logprob, absl::Span<const TokenLogprob> top);

  // Appends a sampled token: detokenizes, applies EOS / stop ids / stop strings / max_tokens /
  // max_model_len, and finishes the request when one of them says so.
  void AppendToken(int32_t token, absl::Time now);

  // Timing and cache bookkeeping reported in events.
  void MarkScheduled(absl::Time now);
  void set_cached_tokens(int64_t n) { cached_tokens_ = n; }

  // Ends the request for a reason decided by the engine (abort, deadline, error).
  void Finish(FinishReason reason, absl::Time now, absl::Status error = absl::OkStatus());

  // Whether an event is due (new tokens or text, or the final event), and takes it.
  bool HasEvent() const { return !pending_tokens_.empty() || (finished() && !final_sent_); }
  GenerationOutput TakeEvent();

  // Seconds between the last two generated tokens, for the inter-token-latency metric; nullopt
  // before the second token.
  std::optional<double> last_inter_token_seconds() const { return last_itl_; }

 private:
  void FinishInternal(FinishReason reason, absl::Time now);
  void AppendText(const std::string& piece);
  // End of output: releases text held back by the detokenizer and the stop matcher.
  void FlushText();

  GenerationRequest request_;
  TokenStreamPtr stream_;
  const Tokenizer& tokenizer_;
  const std::vector<int32_t>& eos_ids_;
  const int64_t max_model_len_;
  const uint64_t seed_;
  Sampler sampler_;
  std::optional<PenaltyTokens> penalty_tokens_;  // device sampling with penalties only
  StreamDecoder detokenizer_;
  StopStringMatcher stop_matcher_;

  std::vector<int32_t> output_;
  std::vector<int32_t> pending_tokens_;
  std::string pending_text_;
  std::vector<OutputLogprob> pending_logprobs_;
  std::optional<OutputLogprob> next_logprob_;  // computed in SampleNext, attached in AppendToken

  FinishReason finish_reason_ = FinishReason::kNone;
  std::string matched_stop_;
  absl::Status error_;
  bool final_sent_ = false;
  bool text_stopped_ = false;  // a stop string matched: no further text

  int64_t cached_tokens_ = 0;
  absl::Time arrival_;
  std::optional<absl::Time> first_scheduled_;
  std::optional<absl::Time> first_token_;
  std::optional<absl::Time> last_token_;
  std::optional<double> last_itl_;
  absl::Time finished_at_;
};

}  // namespace lychee
