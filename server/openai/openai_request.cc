// SPDX-License-Identifier: Apache-2.0
// Parsing and validation of /v1/completions and /v1/chat/completions bodies (see
// openai_request.h). Sections: (1) the body, (2) fields both endpoints share, (3) completions,
// (4) chat messages and template variables, (5) context fitting.
#include "server/openai/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include "common/file.h"
#include "common/status.h"
#include "server/openai/api_error.h"

namespace lychee::openai {
namespace {

// ---------------------------------------------------------------------------------------------
// (1) The body.

// Deeper bodies are refused before parsing: nothing we accept nests this deep, and it bounds
// the recursion of everything that walks the value later (templates, dumps).
constexpr int kMaxJsonDepth = 64;

int JsonDepth(std::string_view text) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

absl::StatusOr<Json> ParseBody(std::string_view body) {
  if (JsonDepth(body) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        fmt::format("request body nests deeper than {} levels", kMaxJsonDepth));
  }
  Json json;
  try {
    json = Json::parse(body);
  } catch (const Json::parse_error& e) {
    // In our words, without the library's exception names.
    return absl::InvalidArgumentError(
        body.empty()
            ? std::string("request body is empty; send a JSON object")
            : fmt::format("request body is not valid JSON (syntax error near byte {})", e.byte));
  } catch (const Json::exception&) {
    return absl::InvalidArgumentError("request body is not valid JSON");
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("request body must be a JSON object, got {}", JsonTypeName(json)));
  }
  return json;
}

absl::Status Unsupported(std::string_view param, std::string_view what) {
  return InvalidParam(param, fmt::format("{} is not supported", what));
}

// ---------------------------------------------------------------------------------------------
// (2) Fields both endpoints share.

absl::Status ParseStop(const FieldReader& f, GenerationRequest& r) {
  const Json* stop = f.Get("stop");
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    if (stop->get_ref<const std::string&>().empty()) return InvalidParam("stop", "stop is empty");
    if (stop->get_ref<const std::string&>().size() > kMaxStopStringBytes) {
      return InvalidParam(
          "stop", fmt::format("stop is {} bytes, at most {} allowed",
                              stop->get_ref<const std::string&>().size(), kMaxStopStringBytes));
    }
    r.stop.push_back(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) {
    return InvalidParam("stop", fmt::format("stop must be a string or a list of strings, got {}",
                                            JsonTypeName(*stop)));
  }
  // Every stop string is matched against the output tail after every token: bound the work.
  if (stop->size() > kMaxStopStrings) {
    return InvalidParam("stop", fmt::format("stop holds {} strings, at most {} allowed",
                                            stop->size(), kMaxStopStrings));
  }
  for (size_t i = 0; i < stop->size(); ++i) {
    const Json& s = (*stop)[i];
    if (!s.is_string()) {
      return InvalidParam("stop",
                          fmt::format("stop[{}] must be a string, got {}", i, JsonTypeName(s)));
    }
    if (s.get_ref<const std::string&>().empty()) {
      return InvalidParam("stop", fmt::format("stop[{}] is empty", i));
    }
    if (s.get_ref<const std::string&>().size() > kMaxStopStringBytes) {
      return InvalidParam("stop",
                          fmt::format("stop[{}] is {} bytes, at most {} allowed", i,
                                      s.get_ref<const std::string&>().size(), kMaxStopStringBytes));
    }
    r.stop.push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const Json& value, std::string_view param, int64_t vocab_size,
                           std::vector<int32_t>& out) {
  if (!value.is_array()) {
    return InvalidParam(
        param, fmt::format("{} must be a list of token ids, got {}", param, JsonTypeName(value)));
  }
  out.clear();
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& id = value[i];
    if (!id.is_number_integer()) {
      return InvalidParam(
          param, fmt::format("{}[{}] must be an integer, got {}", param, i, JsonTypeName(id)));
    }
    const int64_t v = id.is_number_unsigned()
                          ? static_cast<int64_t>(std::min<uint64_t>(id.get<uint64_t>(), 1ull << 62))
                          : id.get<int64_t>();
    if (v < 0 || v >= vocab_size) {
      return InvalidParam(param,
                          fmt::format("{}[{}] is {}, must be in [0, {})", param, i, v, vocab_size));
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return absl::OkStatus();
}

// A nested object of `policy` ("lychee", "prhs"): nullptr when absent.
absl::StatusOr<const Json*> PolicyObject(const FieldReader& p, std::string_view name) {
  const Json* value = p.Get(name);
  if (value == nullptr || value->is_object()) return value;
  const std::string param = p.Param(name);
  return InvalidParam(param,
                      fmt::format("{} must be an object, got {}", param, JsonTypeName(*value)));
}

// An integer field of `reader` that must be >= lo; leaves `out` alone when absent.
absl::Status AtLeast(const FieldReader& reader, std::string_view name, int64_t lo, int64_t& out) {
  std::optional<int64_t> value;
  LY_RETURN_IF_ERROR(reader.Integer(name, value));
  if (!value.has_value()) return absl::OkStatus();
  if (*value < lo) {
    const std::string param = reader.Param(name);
    return InvalidParam(param, fmt::format("{} is {}, must be >= {}", param, *value, lo));
  }
  out = *value;
  return absl::OkStatus();
}

// A number field of `reader` in [lo, hi] ((lo, hi] when lo_open); leaves `out` alone when absent.
absl::Status InRange(const FieldReader& reader, std::string_view name, double lo, double hi,
                     bool lo_open, double& out) {
  std::optional<double> value;
  LY_RETURN_IF_ERROR(reader.Number(name, value));
  if (!value.has_value()) return absl::OkStatus();
  LY_RETURN_IF_ERROR(reader.CheckRange(name, *value, lo, hi, lo_open));
  out = *value;
  return absl::OkStatus();
}

absl::Status ParseLycheeKnobs(const Json& object, LycheeKnobs& lychee) {
  const FieldReader l(object, "policy.lychee.");
  std::optional<std::string> mode;
  LY_RETURN_IF_ERROR(l.String("mode", mode));
  if (mode.has_value()) {
    if (*mode != "block" && *mode != "token") {
      return InvalidParam(
          "policy.lychee.mode",
          fmt::format("policy.lychee.mode is \"{}\", must be \"block\" or \"token\"", *mode));
    }
    lychee.mode = *mode;
  }
  LY_RETURN_IF_ERROR(AtLeast(l, "sink_tokens", 0, lychee.sink_tokens));
  LY_RETURN_IF_ERROR(AtLeast(l, "local_tokens", 1, lychee.local_tokens));
  return AtLeast(l, "correction_interval", 0, lychee.correction_interval);
}

absl::Status ParsePrhsKnobs(const Json& object, PrhsKnobs& prhs) {
  const FieldReader h(object, "policy.prhs.");
  LY_RETURN_IF_ERROR(InRange(h, "tau", -1, 1, /*lo_open=*/false, prhs.tau));
  LY_RETURN_IF_ERROR(AtLeast(h, "dilation", 0, prhs.dilation));
  LY_RETURN_IF_ERROR(InRange(h, "dilate_fraction", 0, 1, /*lo_open=*/false, prhs.dilate_fraction));
  LY_RETURN_IF_ERROR(AtLeast(h, "sink_tokens", 0, prhs.sink_tokens));
  LY_RETURN_IF_ERROR(AtLeast(h, "local_tokens", 1, prhs.local_tokens));
  LY_RETURN_IF_ERROR(AtLeast(h, "psaw_start_layer", 0, prhs.psaw_start_layer));
  LY_RETURN_IF_ERROR(InRange(h, "psaw_phi", 0, 1, /*lo_open=*/true, prhs.psaw_phi));
  return InRange(h, "psaw_alpha", 0, 1e6, /*lo_open=*/false, prhs.psaw_alpha);
}

// Our extension: the sparsity policy of this request, with the gRPC API's fields and ranges.
// Unset fields take the server's default_policy. Ranges as sparsity::ValidatePolicySpec has
// them (the engine checks again, with the model's block size and head roles).
absl::Status ParsePolicy(const FieldReader& f, const PolicySpec& defaults, PolicySpec& policy) {
  policy = defaults;
  const Json* value = f.Get("policy");
  if (value == nullptr) return absl::OkStatus();
  if (!value->is_object()) {
    return InvalidParam("policy",
                        fmt::format("policy must be an object, got {}", JsonTypeName(*value)));
  }
  const FieldReader p(*value, "policy.");
  std::optional<std::string> name;
  LY_RETURN_IF_ERROR(p.String("name", name));
  if (name.has_value() && !name->empty()) policy.name = *name;
  std::optional<int64_t> budget;
  LY_RETURN_IF_ERROR(p.Integer("budget_tokens", budget));
  if (budget.has_value()) {
    if (*budget < 0) {
      return InvalidParam("policy.budget_tokens",
                          fmt::format("policy.budget_tokens is {}, must be >= 0", *budget));
    }
    if (*budget > 0) policy.budget_tokens = *budget;  // 0: the server's default
  }
  LY_RETURN_IF_ERROR(
      InRange(p, "max_dropped_mass", 0, 1, /*lo_open=*/false, policy.max_dropped_mass));
  LY_RETURN_IF_ERROR(InRange(p, "audit_rate", 0, 1, /*lo_open=*/false, policy.audit_rate));
  LY_ASSIGN_OR_RETURN(const Json* lychee, PolicyObject(p, "lychee"));
  if (lychee != nullptr) LY_RETURN_IF_ERROR(ParseLycheeKnobs(*lychee, policy.lychee));
  LY_ASSIGN_OR_RETURN(const Json* prhs, PolicyObject(p, "prhs"));
  if (prhs != nullptr) LY_RETURN_IF_ERROR(ParsePrhsKnobs(*prhs, policy.prhs));
  return absl::OkStatus();
}

absl::Status ParseSampling(const FieldReader& f, const SamplingDefaults& d, SamplingParams& s) {
  std::optional<double> number;
  // The model's generation_config.json defaults, else OpenAI's (temperature 1, top_p 1); the
  // gRPC service's ranges.
  LY_RETURN_IF_ERROR(f.Number("temperature", number));
  s.temperature = static_cast<float>(number.value_or(d.temperature.value_or(1.0)));
  LY_RETURN_IF_ERROR(f.CheckRange("temperature", s.temperature, 0, 100));
  number.reset();
  LY_RETURN_IF_ERROR(f.Number("top_p", number));
  s.top_p = static_cast<float>(number.value_or(d.top_p.value_or(1.0)));
  LY_RETURN_IF_ERROR(f.CheckRange("top_p", s.top_p, 0, 1, /*lo_open=*/true));
  std::optional<int64_t> top_k;
  LY_RETURN_IF_ERROR(f.Integer("top_k", top_k));
  if (!top_k.has_value()) top_k = d.top_k;
  if (top_k.has_value() && (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max())) {
    return InvalidParam("top_k", fmt::format("top_k is {}, must be >= -1 (0 or -1: off)", *top_k));
  }
  s.top_k = top_k.has_value() && *top_k > 0 ? static_cast<int>(*top_k) : 0;
  number.reset();
  LY_RETURN_IF_ERROR(f.Number("min_p", number));
  s.min_p = static_cast<float>(number.value_or(d.min_p.value_or(0.0)));
  LY_RETURN_IF_ERROR(f.CheckRange("min_p", s.min_p, 0, 1));
  number.reset();
  LY_RETURN_IF_ERROR(f.Number("repetition_penalty", number));
  s.repetition_penalty = static_cast<float>(number.value_or(d.repetition_penalty.value_or(1.0)));
  LY_RETURN_IF_ERROR(f.CheckRange("repetition_penalty", s.repetition_penalty, 0, 100, true));
  number.reset();
  LY_RETURN_IF_ERROR(f.Number("presence_penalty", number));
  s.presence_penalty = static_cast<float>(number.value_or(0.0));
  LY_RETURN_IF_ERROR(f.CheckRange("presence_penalty", s.presence_penalty, -2, 2));
  number.reset();
  LY_RETURN_IF_ERROR(f.Number("frequency_penalty", number));
  s.frequency_penalty = static_cast<float>(number.value_or(0.0));
  LY_RETURN_IF_ERROR(f.CheckRange("frequency_penalty", s.frequency_penalty, -2, 2));
  std::optional<uint64_t> seed;
  LY_RETURN_IF_ERROR(f.Seed("seed", seed));
  s.has_seed = seed.has_value();
  s.seed = seed.value_or(0);
  return absl::OkStatus();
}

absl::Status ParseStreamOptions(const FieldReader& f, CommonParams& out) {
  std::optional<bool> stream;
  LY_RETURN_IF_ERROR(f.Bool("stream", stream));
  out.stream = stream.value_or(false);
  const Json* options = f.Get("stream_options");
  if (options == nullptr) return absl::OkStatus();
  if (!options->is_object()) {
    return InvalidParam("stream_options", fmt::format("stream_options must be an object, got {}",
                                                      JsonTypeName(*options)));
  }
  if (!out.stream) {
    return InvalidParam("stream_options", "stream_options is only allowed when stream is true");
  }
  const FieldReader o(*options, "stream_options.");
  std::optional<bool> flag;
  LY_RETURN_IF_ERROR(o.Bool("include_usage", flag));
  out.include_usage = flag.value_or(false);
  flag.reset();
  LY_RETURN_IF_ERROR(o.Bool("continuous_usage_stats", flag));
  out.continuous_usage_stats = flag.value_or(false);
  return absl::OkStatus();
}

absl::Status ParseCommon(const FieldReader& f, const ModelLimits& limits, bool chat,
                         CommonParams& out) {
  std::optional<std::string> model;
  LY_RETURN_IF_ERROR(f.String("model", model));
  out.model = model.value_or("");

  std::optional<int64_t> max_tokens;
  LY_RETURN_IF_ERROR(f.Integer("max_tokens", max_tokens));
  std::string_view max_name = "max_tokens";
  if (chat) {
    std::optional<int64_t> max_completion_tokens;
    LY_RETURN_IF_ERROR(f.Integer("max_completion_tokens", max_completion_tokens));
    if (max_completion_tokens.has_value()) {
      max_tokens = max_completion_tokens;
      max_name = "max_completion_tokens";
    }
  }
  if (max_tokens.has_value() && *max_tokens < 1) {
    return InvalidParam(max_name, fmt::format("{} is {}, must be >= 1", max_name, *max_tokens));
  }
  out.max_tokens = max_tokens;
  out.max_tokens_param = std::string(max_name);

  GenerationRequest& r = out.generation;
  LY_RETURN_IF_ERROR(ParseSampling(f, limits.defaults, r.sampling));
  LY_RETURN_IF_ERROR(ParseStop(f, r));
  if (const Json* ids = f.Get("stop_token_ids")) {
    LY_RETURN_IF_ERROR(ParseTokenIds(*ids, "stop_token_ids", limits.vocab_size, r.stop_token_ids));
  }
  std::optional<bool> flag;
  LY_RETURN_IF_ERROR(f.Bool("ignore_eos", flag));
  r.ignore_eos = flag.value_or(false);
  flag.reset();
  LY_RETURN_IF_ERROR(f.Bool("include_stop_str_in_output", flag));
  r.include_stop_str_in_output = flag.value_or(false);
  flag.reset();
  LY_RETURN_IF_ERROR(f.Bool("skip_special_tokens", flag));
  r.skip_special_tokens = flag.value_or(true);
  std::optional<int64_t> min_tokens;
  LY_RETURN_IF_ERROR(f.Integer("min_tokens", min_tokens));
  if (min_tokens.has_value() && *min_tokens < 0) {
    return InvalidParam("min_tokens", fmt::format("min_tokens is {}, must be >= 0", *min_tokens));
  }
  r.min_tokens = min_tokens.value_or(0);

  std::optional<int64_t> n;
  LY_RETURN_IF_ERROR(f.Integer("n", n));
  if (n.has_value() && *n != 1) {
    return InvalidParam("n", fmt::format("n is {}; only n = 1 is supported", *n));
  }
  std::optional<std::string> user;  // accepted and ignored, as vLLM does
  LY_RETURN_IF_ERROR(f.String("user", user));
  if (const Json* bias = f.Get("logit_bias"); bias != nullptr && !bias->empty()) {
    return Unsupported("logit_bias", "logit_bias");
  }
  if (f.Get("prompt_logprobs") != nullptr) return Unsupported("prompt_logprobs", "prompt_logprobs");
  LY_RETURN_IF_ERROR(ParseStreamOptions(f, out));
  LY_RETURN_IF_ERROR(ParsePolicy(f, limits.default_policy, r.policy));
  std::optional<int64_t> priority;
  LY_RETURN_IF_ERROR(f.Integer("priority", priority));
  if (priority.has_value() && (*priority < std::numeric_limits<int32_t>::min() ||
                               *priority > std::numeric_limits<int32_t>::max())) {
    return InvalidParam("priority", fmt::format("priority is {}, must fit 32 bits", *priority));
  }
  r.priority = static_cast<int32_t>(priority.value_or(0));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// (3) Completions.

absl::Status ParsePrompt(const FieldReader& f, const ModelLimits& limits, CompletionParams& out) {
  const Json* prompt = f.Get("prompt");
  if (prompt == nullptr) return InvalidParam("prompt", "prompt is missing");
  if (prompt->is_string()) {
    // Refused as gRPC refuses an empty `text` (the tokenizer's BOS alone is no prompt).
    if (prompt->get_ref<const std::string&>().empty()) {
      return InvalidParam("prompt", "prompt is empty");
    }
    out.prompt = prompt->get<std::string>();
    return absl::OkStatus();
  }
  if (!prompt->is_array()) {
    return InvalidParam("prompt",
                        fmt::format("prompt must be a string or a list of token ids, got {}",
                                    JsonTypeName(*prompt)));
  }
  if (prompt->empty()) return InvalidParam("prompt", "prompt is empty");
  const Json& first = prompt->front();
  if (first.is_string() || first.is_array()) {
    // A batch. One prompt per request is what the engine interface and the response carry; a
    // batch of one is that prompt.
    if (prompt->size() != 1) {
      return InvalidParam("prompt",
                          fmt::format("prompt holds {} prompts; batch prompts are not supported, "
                                      "send one prompt per request",
                                      prompt->size()));
    }
    if (first.is_string()) {
      if (first.get_ref<const std::string&>().empty()) {
        return InvalidParam("prompt", "prompt is empty");
      }
      out.prompt = first.get<std::string>();
      return absl::OkStatus();
    }
    std::vector<int32_t> ids;
    LY_RETURN_IF_ERROR(ParseTokenIds(first, "prompt", limits.vocab_size, ids));
    if (ids.empty()) return InvalidParam("prompt", "prompt is empty");
    out.prompt = std::move(ids);
    return absl::OkStatus();
  }
  std::vector<int32_t> ids;
  LY_RETURN_IF_ERROR(ParseTokenIds(*prompt, "prompt", limits.vocab_size, ids));
  out.prompt = std::move(ids);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// (4) Chat messages and template variables.

// Content as the template sees it: a string (text parts joined by "\n", as vLLM's "string"
// content format does) or null.
absl::Status NormalizeContent(Json& message, size_t i) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null() || it->is_string()) return absl::OkStatus();
  const std::string param = fmt::format("messages[{}].content", i);
  if (!it->is_array()) {
    return InvalidParam(param, fmt::format("{} must be a string or a list of content parts, got {}",
                                           param, JsonTypeName(*it)));
  }
  std::string text;
  for (size_t j = 0; j < it->size(); ++j) {
    const Json& part = (*it)[j];
    const std::string part_param = fmt::format("{}[{}]", param, j);
    if (!part.is_object()) {
      return InvalidParam(
          part_param, fmt::format("{} must be an object, got {}", part_param, JsonTypeName(part)));
    }
    const auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return InvalidParam(part_param + ".type", fmt::format("{}.type is missing", part_param));
    }
    if (type->get_ref<const std::string&>() != "text") {
      return InvalidParam(part_param + ".type",
                          fmt::format("{}.type '{}' is not supported (text parts only)", part_param,
                                      type->get<std::string>()));
    }
    const auto part_text = part.find("text");
    if (part_text == part.end() || !part_text->is_string()) {
      return InvalidParam(part_param + ".text",
                          fmt::format("{}.text must be a string", part_param));
    }
    if (j > 0) text += '\n';
    text += part_text->get_ref<const std::string&>();
  }
  *it = std::move(text);
  return absl::OkStatus();
}

// Templates (Llama 3, Qwen, Mistral) iterate over tool-call arguments as a mapping, while OpenAI
// sends them as a JSON string: parse them, as vLLM does; text that is not JSON stays a string.
void ParseToolCallArguments(Json& message) {
  const auto calls = message.find("tool_calls");
  if (calls == message.end() || !calls->is_array()) return;
  for (Json& call : *calls) {
    if (!call.is_object()) continue;
    const auto function = call.find("function");
    if (function == call.end() || !function->is_object()) continue;
    const auto arguments = function->find("arguments");
    if (arguments == function->end() || !arguments->is_string()) continue;
    Json parsed = Json::parse(arguments->get_ref<const std::string&>(), nullptr,
                              /*allow_exceptions=*/false);
    if (!parsed.is_discarded() && parsed.is_object()) *arguments = std::move(parsed);
  }
}

absl::Status ParseMessages(const FieldReader& f, ChatParams& out) {
  const Json* messages = f.Get("messages");
  if (messages == nullptr) return InvalidParam("messages", "messages is missing");
  if (!messages->is_array()) {
    return InvalidParam("messages",
                        fmt::format("messages must be a list, got {}", JsonTypeName(*messages)));
  }
  if (messages->empty()) return InvalidParam("messages", "messages is empty");
  out.messages = *messages;
  for (size_t i = 0; i < out.messages.size(); ++i) {
    Json& message = out.messages[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!message.is_object()) {
      return InvalidParam(
          param, fmt::format("{} must be an object, got {}", param, JsonTypeName(message)));
    }
    const auto role = message.find("role");
    if (role == message.end() || !role->is_string() ||
        role->get_ref<const std::string&>().empty()) {
      return InvalidParam(param + ".role",
                          fmt::format("{}.role must be a non-empty string", param));
    }
    LY_RETURN_IF_ERROR(NormalizeContent(message, i));
    ParseToolCallArguments(message);
  }
  return absl::OkStatus();
}

absl::Status ParseTemplateVariables(const FieldReader& f, ChatParams& out) {
  if (const Json* tools = f.Get("tools")) {
    if (!tools->is_array()) {
      return InvalidParam("tools",
                          fmt::format("tools must be a list, got {}", JsonTypeName(*tools)));
    }
    for (size_t i = 0; i < tools->size(); ++i) {
      if (!(*tools)[i].is_object()) {
        return InvalidParam("tools", fmt::format("tools[{}] must be an object", i));
      }
    }
    // Given to the template as sent ({"type": "function", "function": {...}}), key order kept.
    if (!tools->empty()) out.template_variables["tools"] = *tools;
  }
  if (const Json* choice = f.Get("tool_choice")) {
    // Tools reach the template, but no tool-call parser turns the output into tool_calls: the
    // model's text comes back as content. So only the choices that need no parser are accepted.
    const bool ok = choice->is_string() && (*choice == "none" || *choice == "auto");
    if (!ok) {
      return InvalidParam("tool_choice",
                          "tool_choice must be \"none\" or \"auto\"; forced tool calls are not "
                          "supported (no tool-call parser)");
    }
  }
  if (const Json* functions = f.Get("functions"); functions != nullptr && !functions->empty()) {
    return Unsupported("functions", "functions (deprecated; use tools)");
  }
  if (const Json* documents = f.Get("documents")) {
    if (!documents->is_array()) return InvalidParam("documents", "documents must be a list");
    out.template_variables["documents"] = *documents;
  }
  if (const Json* kwargs = f.Get("chat_template_kwargs")) {
    if (!kwargs->is_object()) {
      return InvalidParam(
          "chat_template_kwargs",
          fmt::format("chat_template_kwargs must be an object, got {}", JsonTypeName(*kwargs)));
    }
    // Later keys win, as in vLLM: chat_template_kwargs may override tools.
    for (const auto& [key, value] : kwargs->items()) out.template_variables[key] = value;
  }
  if (f.Get("chat_template") != nullptr) {
    return Unsupported("chat_template", "a request-supplied chat_template");
  }
  std::optional<bool> flag;
  LY_RETURN_IF_ERROR(f.Bool("add_generation_prompt", flag));
  out.add_generation_prompt = flag.value_or(true);
  flag.reset();
  LY_RETURN_IF_ERROR(f.Bool("continue_final_message", flag));
  if (flag.value_or(false)) return Unsupported("continue_final_message", "continue_final_message");
  if (const Json* format = f.Get("response_format")) {
    const bool text =
        format->is_object() && format->contains("type") && (*format)["type"] == "text";
    if (!text) {
      return Unsupported("response_format", "response_format other than {\"type\": \"text\"}");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionParams> ParseCompletionRequest(std::string_view body,
                                                        const ModelLimits& limits) {
  LY_ASSIGN_OR_RETURN(const Json json, ParseBody(body));
  const FieldReader f(json);
  CompletionParams out;
  LY_RETURN_IF_ERROR(ParsePrompt(f, limits, out));
  LY_RETURN_IF_ERROR(ParseCommon(f, limits, /*chat=*/false, out.common));
  std::optional<int64_t> logprobs;
  LY_RETURN_IF_ERROR(f.Integer("logprobs", logprobs));
  if (logprobs.has_value()) {
    if (*logprobs < 0 || *logprobs > kMaxTopLogprobs) {
      return InvalidParam("logprobs", fmt::format("logprobs is {}, must be in [0, {}]", *logprobs,
                                                  kMaxTopLogprobs));
    }
    out.logprobs = static_cast<int>(*logprobs);
  }
  std::optional<bool> echo;
  LY_RETURN_IF_ERROR(f.Bool("echo", echo));
  out.echo = echo.value_or(false);
  if (out.echo && out.logprobs.has_value()) {
    return InvalidParam("echo", "echo with logprobs is not supported (it needs prompt logprobs)");
  }
  std::optional<std::string> suffix;
  LY_RETURN_IF_ERROR(f.String("suffix", suffix));
  if (suffix.has_value() && !suffix->empty()) return Unsupported("suffix", "suffix");
  std::optional<int64_t> best_of;
  LY_RETURN_IF_ERROR(f.Integer("best_of", best_of));
  if (best_of.has_value() && *best_of != 1) {
    return InvalidParam("best_of", fmt::format("best_of is {}; only 1 is supported", *best_of));
  }
  return out;
}

absl::StatusOr<ChatParams> ParseChatRequest(std::string_view body, const ModelLimits& limits) {
  LY_ASSIGN_OR_RETURN(const Json json, ParseBody(body));
  const FieldReader f(json);
  ChatParams out;
  LY_RETURN_IF_ERROR(ParseMessages(f, out));
  LY_RETURN_IF_ERROR(ParseCommon(f, limits, /*chat=*/true, out.common));
  LY_RETURN_IF_ERROR(ParseTemplateVariables(f, out));
  std::optional<bool> logprobs;
  // Chat's logprobs is a boolean; completions' is a count.
  LY_RETURN_IF_ERROR(f.Bool("logprobs", logprobs));
  out.logprobs = logprobs.value_or(false);
  std::optional<int64_t> top_logprobs;
  LY_RETURN_IF_ERROR(f.Integer("top_logprobs", top_logprobs));
  if (top_logprobs.has_value()) {
    if (*top_logprobs < 0 || *top_logprobs > kMaxTopLogprobs) {
      return InvalidParam("top_logprobs", fmt::format("top_logprobs is {}, must be in [0, {}]",
                                                      *top_logprobs, kMaxTopLogprobs));
    }
    if (*top_logprobs > 0 && !out.logprobs) {
      return InvalidParam("top_logprobs", "top_logprobs needs logprobs set to true");
    }
    out.top_logprobs = static_cast<int>(*top_logprobs);
  }
  std::optional<bool> echo;
  LY_RETURN_IF_ERROR(f.Bool("echo", echo));
  if (echo.value_or(false)) return Unsupported("echo", "echo in chat completions");
  return out;
}

absl::Status CheckJsonContentType(std::string_view content_type) {
  std::string_view media_type = content_type.substr(0, content_type.find(';'));
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  while (!media_type.empty() && (media_type.front() == ' ' || media_type.front() == '\t')) {
    media_type.remove_prefix(1);
  }
  constexpr std::string_view kJson = "application/json";
  if (std::equal(media_type.begin(), media_type.end(), kJson.begin(), kJson.end(),
                 [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      fmt::format("the request body must be JSON sent with `Content-Type: application/json` ({})",
                  content_type.empty() ? std::string("no Content-Type given")
                                       : fmt::format("`{}` given", content_type.substr(0, 100))));
}

absl::Status CheckModel(std::string_view model, const ModelLimits& limits) {
  if (model.empty() || model == limits.served_name) return absl::OkStatus();
  return WithCode(
      WithParam(absl::NotFoundError(fmt::format("The model `{}` does not exist.", model)), "model"),
      "model_not_found");
}

// ---------------------------------------------------------------------------------------------
// (5) Context fitting.

absl::Status FitToContext(int64_t prompt_len, std::string_view prompt_param, bool chat,
                          const ModelLimits& limits, CommonParams& params) {
  const int64_t max_len = limits.max_model_len;
  if (prompt_len >= max_len) {
    return InvalidParam(prompt_param,
                        fmt::format("This model's maximum context length is {} tokens. However, "
                                    "your request has {} input tokens. Please reduce the length "
                                    "of the input.",
                                    max_len, prompt_len));
  }
  const int64_t room = max_len - prompt_len;
  int64_t max_tokens = 0;
  if (params.max_tokens.has_value()) {
    max_tokens = *params.max_tokens;
    if (prompt_len + max_tokens > max_len) {
      return InvalidParam(
          params.max_tokens_param,
          fmt::format("This model's maximum context length is {} tokens. However, you requested "
                      "{} tokens ({} in the input, {} in the completion). Please reduce the "
                      "length of the input or {}.",
                      max_len, prompt_len + max_tokens, prompt_len, max_tokens,
                      params.max_tokens_param));
    }
  } else {
    max_tokens = chat ? room : std::min(room, kDefaultCompletionMaxTokens);
    if (limits.defaults.max_new_tokens.has_value() && *limits.defaults.max_new_tokens > 0) {
      max_tokens = std::min(max_tokens, *limits.defaults.max_new_tokens);
    }
  }
  GenerationRequest& r = params.generation;
  r.max_tokens = max_tokens;
  if (r.min_tokens > max_tokens) {
    return InvalidParam("min_tokens", fmt::format("min_tokens is {}, must be in [0, max_tokens={}]",
                                                  r.min_tokens, max_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<SamplingDefaults> LoadSamplingDefaults(const std::string& model_dir) {
  SamplingDefaults d;
  const std::string path = JoinPath(model_dir, "generation_config.json");
  if (!FileExists(path)) return d;
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  const Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(path + ": not a JSON object");
  }
  const FieldReader f(json, path + ": ");
  LY_RETURN_IF_ERROR(f.Number("temperature", d.temperature));
  LY_RETURN_IF_ERROR(f.Number("top_p", d.top_p));
  LY_RETURN_IF_ERROR(f.Integer("top_k", d.top_k));
  // vLLM applies only values that differ from transformers' defaults; top_k 50 is one of those.
  if (d.top_k == 50) d.top_k.reset();
  LY_RETURN_IF_ERROR(f.Number("min_p", d.min_p));
  LY_RETURN_IF_ERROR(f.Number("repetition_penalty", d.repetition_penalty));
  LY_RETURN_IF_ERROR(f.Integer("max_new_tokens", d.max_new_tokens));
  return d;
}

bool IsValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdLength) return false;
  for (const char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace lychee::openai
