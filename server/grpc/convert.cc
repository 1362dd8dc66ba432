// SPDX-License-Identifier: Apache-2.0
#include "server/grpc/convert.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

#include "common/status.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::grpc_server {
namespace {

absl::Status Invalid(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

absl::Status CheckRange(const char* field, double value, double lo, double hi, bool lo_open) {
  const bool ok = std::isfinite(value) && (lo_open ? value > lo : value >= lo) && value <= hi;
  if (ok) return absl::OkStatus();
  return Invalid(
      fmt::format("{} is {}, must be in {}{}, {}]", field, value, lo_open ? "(" : "[", lo, hi));
}

// The double with `value`'s shortest decimal form (0.02f → 0.02, not 0.019999999552965164).
// Monotone, so the report's order (max_exact <= max_bound) survives.
double ShortestDouble(float value) {
  return std::strtod(fmt::format("{}", value).c_str(), nullptr);
}

absl::Status CheckTokenIds(const char* field, const google::protobuf::RepeatedField<int32_t>& ids,
                           int64_t vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(fmt::format("{}[{}] is {}, must be in [0, {})", field, i, ids[i], vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > kMaxRequestIdLength) {
    return Invalid(
        fmt::format("request_id is {} bytes, at most {} allowed", id.size(), kMaxRequestIdLength));
  }
  for (const char c : id) {
    if (c < 0x21 || c > 0x7e) return Invalid("request_id must be printable ASCII without spaces");
  }
  return absl::OkStatus();
}

absl::Status FillSampling(const v1::SamplingParams& p, int64_t vocab_size, GenerationRequest& r) {
  SamplingParams& s = r.sampling;
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.top_k = p.top_k() < 0 ? 0 : p.top_k();
  s.min_p = p.min_p();
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.has_seed = p.has_seed();
  s.seed = p.seed();
  if (auto st = CheckRange("sampling_params.temperature", s.temperature, 0, 100, false); !st.ok()) {
    return st;
  }
  if (auto st = CheckRange("sampling_params.top_p", s.top_p, 0, 1, true); !st.ok()) return st;
  if (p.top_k() < -1) return Invalid("sampling_params.top_k must be >= -1 (0 or -1: off)");
  if (auto st = CheckRange("sampling_params.min_p", s.min_p, 0, 1, false); !st.ok()) return st;
  if (auto st =
          CheckRange("sampling_params.repetition_penalty", s.repetition_penalty, 0, 100, true);
      !st.ok()) {
    return st;
  }
  if (auto st = CheckRange("sampling_params.presence_penalty", s.presence_penalty, -2, 2, false);
      !st.ok()) {
    return st;
  }
  if (auto st = CheckRange("sampling_params.frequency_penalty", s.frequency_penalty, -2, 2, false);
      !st.ok()) {
    return st;
  }
  r.max_tokens = p.has_max_tokens() ? p.max_tokens() : 16;
  if (r.max_tokens < 1) {
    return Invalid(fmt::format("sampling_params.max_tokens is {}, must be >= 1", r.max_tokens));
  }
  r.min_tokens = p.min_tokens();
  if (r.min_tokens < 0 || r.min_tokens > r.max_tokens) {
    return Invalid(fmt::format("sampling_params.min_tokens is {}, must be in [0, max_tokens={}]",
                               r.min_tokens, r.max_tokens));
  }
  if (p.stop_size() > kMaxStopStrings) {
    return Invalid(fmt::format("sampling_params.stop holds {} strings, at most {} allowed",
                               p.stop_size(), kMaxStopStrings));
  }
  for (int i = 0; i < p.stop_size(); ++i) {
    if (p.stop(i).empty()) return Invalid(fmt::format("sampling_params.stop[{}] is empty", i));
    if (p.stop(i).size() > kMaxStopStringBytes) {
      return Invalid(fmt::format("sampling_params.stop[{}] is {} bytes, at most {} allowed", i,
                                 p.stop(i).size(), kMaxStopStringBytes));
    }
  }
  r.stop.assign(p.stop().begin(), p.stop().end());
  if (auto st = CheckTokenIds("sampling_params.stop_token_ids", p.stop_token_ids(), vocab_size);
      !st.ok()) {
    return st;
  }
  r.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  r.ignore_eos = p.ignore_eos();
  r.skip_special_tokens = p.has_skip_special_tokens() ? p.skip_special_tokens() : true;
  r.include_stop_str_in_output = p.include_stop_str_in_output();
  if (p.top_logprobs() < 0 || p.top_logprobs() > kMaxTopLogprobs) {
    return Invalid(fmt::format("sampling_params.top_logprobs is {}, must be in [0, {}]",
                               p.top_logprobs(), kMaxTopLogprobs));
  }
  r.top_logprobs = p.top_logprobs();
  return absl::OkStatus();
}

absl::Status CheckAtLeast(const char* field, int64_t value, int64_t lo) {
  if (value >= lo) return absl::OkStatus();
  return Invalid(fmt::format("{} is {}, must be >= {}", field, value, lo));
}

// Starts from the server's defaults; each field the request sets replaces the default. Ranges
// as sparsity::ValidatePolicySpec has them (which the engine checks again, with the model's
// block size and head roles); here the messages name the fields as the client spells them.
absl::Status FillPolicy(const v1::SparsityPolicy& p, const PolicySpec& defaults,
                        PolicySpec& policy) {
  policy = defaults;
  if (!p.name().empty()) policy.name = p.name();
  if (p.has_budget_tokens()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.budget_tokens", p.budget_tokens(), 0));
    if (p.budget_tokens() > 0) policy.budget_tokens = p.budget_tokens();
  }
  if (p.has_max_dropped_mass()) {
    LY_RETURN_IF_ERROR(
        CheckRange("policy.max_dropped_mass", p.max_dropped_mass(), 0, 1, /*lo_open=*/false));
    policy.max_dropped_mass = p.max_dropped_mass();
  }
  if (p.has_audit_rate()) {
    LY_RETURN_IF_ERROR(CheckRange("policy.audit_rate", p.audit_rate(), 0, 1, /*lo_open=*/false));
    policy.audit_rate = p.audit_rate();
  }

  const v1::LycheeOptions& l = p.lychee();
  LycheeKnobs& lychee = policy.lychee;
  if (l.has_mode()) {
    if (l.mode() != "block" && l.mode() != "token") {
      return Invalid(
          fmt::format("policy.lychee.mode is \"{}\", must be \"block\" or \"token\"", l.mode()));
    }
    lychee.mode = l.mode();
  }
  if (l.has_sink_tokens()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.lychee.sink_tokens", l.sink_tokens(), 0));
    lychee.sink_tokens = l.sink_tokens();
  }
  if (l.has_local_tokens()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.lychee.local_tokens", l.local_tokens(), 1));
    lychee.local_tokens = l.local_tokens();
  }
  if (l.has_correction_interval()) {
    LY_RETURN_IF_ERROR(
        CheckAtLeast("policy.lychee.correction_interval", l.correction_interval(), 0));
    lychee.correction_interval = l.correction_interval();
  }

  const v1::PrhsOptions& h = p.prhs();
  PrhsKnobs& prhs = policy.prhs;
  if (h.has_tau()) {
    LY_RETURN_IF_ERROR(CheckRange("policy.prhs.tau", h.tau(), -1, 1, /*lo_open=*/false));
    prhs.tau = h.tau();
  }
  if (h.has_dilation()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.prhs.dilation", h.dilation(), 0));
    prhs.dilation = h.dilation();
  }
  if (h.has_dilate_fraction()) {
    LY_RETURN_IF_ERROR(
        CheckRange("policy.prhs.dilate_fraction", h.dilate_fraction(), 0, 1, /*lo_open=*/false));
    prhs.dilate_fraction = h.dilate_fraction();
  }
  if (h.has_sink_tokens()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.prhs.sink_tokens", h.sink_tokens(), 0));
    prhs.sink_tokens = h.sink_tokens();
  }
  if (h.has_local_tokens()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.prhs.local_tokens", h.local_tokens(), 1));
    prhs.local_tokens = h.local_tokens();
  }
  if (h.has_psaw_start_layer()) {
    LY_RETURN_IF_ERROR(CheckAtLeast("policy.prhs.psaw_start_layer", h.psaw_start_layer(), 0));
    prhs.psaw_start_layer = h.psaw_start_layer();
  }
  if (h.has_psaw_phi()) {
    LY_RETURN_IF_ERROR(CheckRange("policy.prhs.psaw_phi", h.psaw_phi(), 0, 1, /*lo_open=*/true));
    prhs.psaw_phi = h.psaw_phi();
  }
  if (h.has_psaw_alpha()) {
    LY_RETURN_IF_ERROR(
        CheckRange("policy.prhs.psaw_alpha", h.psaw_alpha(), 0, 1e6, /*lo_open=*/false));
    prhs.psaw_alpha = h.psaw_alpha();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Tokenizer& tokenizer,
                                                      int64_t vocab_size, int64_t max_model_len,
                                                      const PolicySpec& policy_defaults,
                                                      int64_t max_prompt_bytes) {
  GenerationRequest out;
  if (auto st = CheckRequestId(request.request_id()); !st.ok()) return st;
  out.request_id = request.request_id();
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return Invalid("text is empty");
      // Refused by size before the tokenizer sees it.
      if (max_prompt_bytes > 0 && static_cast<int64_t>(request.text().size()) > max_prompt_bytes) {
        return Invalid(fmt::format(
            "text is {} bytes, more than this server's max_prompt_bytes={} (checked before "
            "tokenizing; the context is {} tokens)",
            request.text().size(), max_prompt_bytes, max_model_len));
      }
      out.prompt = tokenizer.Encode(
          request.text(), request.has_add_special_tokens() ? request.add_special_tokens() : true);
      if (out.prompt.empty()) return Invalid("text encodes to no tokens");
      break;
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty()) return Invalid("token_ids is empty");
      if (auto st = CheckTokenIds("token_ids", request.token_ids().ids(), vocab_size); !st.ok()) {
        return st;
      }
      out.prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::INPUT_NOT_SET:
      return Invalid("input is missing: set text or token_ids");
  }
  if (max_model_len > 0 && static_cast<int64_t>(out.prompt.size()) >= max_model_len) {
    return Invalid(fmt::format("prompt is {} tokens, must be below max_model_len={}",
                               out.prompt.size(), max_model_len));
  }
  if (auto st = FillSampling(request.sampling_params(), vocab_size, out); !st.ok()) return st;
  if (auto st = FillPolicy(request.policy(), policy_defaults, out.policy); !st.ok()) return st;
  out.priority = request.priority();
  return out;
}

void ToPolicyMessage(const PolicySpec& spec, v1::SparsityPolicy* message) {
  message->set_name(spec.name);
  message->set_budget_tokens(spec.budget_tokens);
  message->set_max_dropped_mass(spec.max_dropped_mass);
  message->set_audit_rate(spec.audit_rate);
  v1::LycheeOptions* lychee = message->mutable_lychee();
  lychee->set_mode(spec.lychee.mode);
  lychee->set_sink_tokens(spec.lychee.sink_tokens);
  lychee->set_local_tokens(spec.lychee.local_tokens);
  lychee->set_correction_interval(spec.lychee.correction_interval);
  v1::PrhsOptions* prhs = message->mutable_prhs();
  prhs->set_tau(spec.prhs.tau);
  prhs->set_dilation(spec.prhs.dilation);
  prhs->set_dilate_fraction(spec.prhs.dilate_fraction);
  prhs->set_sink_tokens(spec.prhs.sink_tokens);
  prhs->set_local_tokens(spec.prhs.local_tokens);
  prhs->set_psaw_start_layer(spec.prhs.psaw_start_layer);
  prhs->set_psaw_phi(spec.prhs.psaw_phi);
  prhs->set_psaw_alpha(spec.prhs.psaw_alpha);
}

bool HasOutput(const GenerationOutput& event) {
  return !event.token_ids.empty() || !event.text.empty() || !event.logprobs.empty();
}

void ToChunk(const GenerationOutput& event, v1::GenerateStreamChunk* chunk) {
  chunk->mutable_token_ids()->Add(event.token_ids.begin(), event.token_ids.end());
  chunk->set_text(event.text);
  for (const OutputLogprob& lp : event.logprobs) {
    v1::TokenLogprob* out = chunk->add_logprobs();
    out->set_token_id(lp.token_id);
    out->set_logprob(lp.logprob);
    for (const TokenLogprob& candidate : lp.top) {
      v1::TopLogprob* top = out->add_top_logprobs();
      top->set_token_id(candidate.token);
      top->set_logprob(candidate.logprob);
    }
  }
  chunk->set_prompt_tokens(static_cast<int32_t>(event.prompt_tokens));
  chunk->set_completion_tokens(static_cast<int32_t>(event.completion_tokens));
  chunk->set_cached_tokens(static_cast<int32_t>(event.cached_tokens));
}

void ToComplete(const GenerationOutput& event, v1::GenerateComplete* complete) {
  complete->set_finish_reason(std::string(FinishReasonName(event.finish_reason)));
  complete->set_matched_stop(event.matched_stop);
  complete->set_prompt_tokens(static_cast<int32_t>(event.prompt_tokens));
  complete->set_completion_tokens(static_cast<int32_t>(event.completion_tokens));
  complete->set_cached_tokens(static_cast<int32_t>(event.cached_tokens));
  complete->set_queue_seconds(event.timings.queue_seconds);
  complete->set_ttft_seconds(event.timings.first_token_seconds);
  complete->set_e2e_seconds(event.timings.e2e_seconds);
  if (UsedSparsePolicy(event.policy_report)) {
    ToPolicyReport(event.policy_report, complete->mutable_policy_report());
  }
}

bool UsedSparsePolicy(const PolicyReport& report) {
  return !report.policy.empty() && report.policy != "dense";
}

void ToPolicyReport(const PolicyReport& report, v1::PolicyReport* message) {
  message->set_policy(report.policy);
  message->set_max_bound(ShortestDouble(report.max_bound));
  message->set_mean_bound(report.mean_bound);
  message->set_max_exact(ShortestDouble(report.max_exact));
  message->set_audited_steps(report.audited_steps);
  message->set_kv_read_fraction(report.kv_read_fraction);
  message->set_widenings(report.widenings);
  message->set_head_selections(report.head_selections);
  message->set_reused(report.reused);
  message->set_dense_fallbacks(report.dense_fallbacks);
  message->set_cache_corrections(report.cache_corrections);
  message->set_selection_seconds(report.selection_seconds);
}

void ToError(const absl::Status& status, v1::GenerateError* error) {
  error->set_message(std::string(status.message()));
  error->set_http_status_code(HttpStatusFor(status.code()));
  error->set_code(absl::StatusCodeToString(status.code()));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering (0..16).
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace lychee::grpc_server
