// SPDX-License-Identifier: Apache-2.0
// config.json → ModelConfig. Defaults follow the Hugging Face config classes of each architecture
// (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config), so a checkpoint means here what it
// means in transformers; fields that change the forward pass in ways we do not implement are
// rejected by name rather than silently ignored.
#include "model/config.h"

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lychee {
namespace {

using Json = nlohmann::json;

// Typed access to one JSON object with errors that name the file and the (dotted) field.
class FieldReader {
 public:
  FieldReader(const Json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // Present and not null. HF writes `null` for "use the default", so null counts as absent.
  bool Has(const char* key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }
  const Json& Get(const char* key) const { return object_.at(key); }

  absl::Status Error(const char* key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": `", prefix_, key, "` ", std::string(what)));
  }
  absl::Status Missing(const char* key) const { return Error(key, "is required but missing"); }

  absl::StatusOr<int64_t> Int(const char* key, std::optional<int64_t> fallback) const {
    if (!Has(key)) {
      if (fallback.has_value()) return *fallback;
      return Missing(key);
    }
    const Json& v = Get(key);
    if (!v.is_number_integer()) {
      return Error(key, absl::StrCat("must be an integer, got ", v.dump()));
    }
    return v.get<int64_t>();
  }

  // An integer that must be > 0 (sizes and counts).
  absl::StatusOr<int64_t> PositiveInt(const char* key, std::optional<int64_t> fallback) const {
    LY_ASSIGN_OR_RETURN(int64_t value, Int(key, fallback));
    if (value <= 0) return Error(key, absl::StrCat("must be positive, got ", value));
    return value;
  }

  absl::StatusOr<double> Number(const char* key, std::optional<double> fallback) const {
    if (!Has(key)) {
      if (fallback.has_value()) return *fallback;
      return Missing(key);
    }
    const Json& v = Get(key);
    if (!v.is_number()) return Error(key, absl::StrCat("must be a number, got ", v.dump()));
    const double d = v.get<double>();
    if (!std::isfinite(d)) return Error(key, "must be finite");
    return d;
  }

  absl::StatusOr<bool> Bool(const char* key, bool fallback) const {
    if (!Has(key)) return fallback;
    const Json& v = Get(key);
    if (!v.is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", v.dump()));
    return v.get<bool>();
  }

  absl::StatusOr<std::string> String(const char* key, std::optional<std::string> fallback) const {
    if (!Has(key)) {
      if (fallback.has_value()) return *fallback;
      return Missing(key);
    }
    const Json& v = Get(key);
    if (!v.is_string()) return Error(key, absl::StrCat("must be a string, got ", v.dump()));
    return v.get<std::string>();
  }

 private:
  const Json& object_;
  std::string source_;
  std::string prefix_;
};

// Per-architecture facts that are not in config.json, or whose defaults differ.
struct ArchTraits {
  bool qkv_bias_always = false;       // Qwen2 hard-codes bias=True on q/k/v.
  bool reads_attention_bias = false;  // llama, qwen3 read `attention_bias`; mistral has none.
  bool qk_norm = false;               // Qwen3.
  bool window_needs_flag = false;     // qwen2/qwen3: `use_sliding_window` gates `sliding_window`.
  std::optional<int64_t> default_head_dim;  // Qwen3Config defaults head_dim to 128.
  int64_t default_max_positions = 2048;
  std::optional<int64_t> default_sliding_window;  // MistralConfig defaults it to 4096.
};

absl::StatusOr<ArchTraits> TraitsFor(const std::string& model_type, const FieldReader& r) {
  ArchTraits t;
  if (model_type == "llama") {
    t.reads_attention_bias = true;
  } else if (model_type == "mistral") {
    t.default_max_positions = 4096 * 32;
    t.default_sliding_window = 4096;
  } else if (model_type == "qwen2") {
    t.qkv_bias_always = true;
    t.window_needs_flag = true;
    t.default_max_positions = 32768;
  } else if (model_type == "qwen3") {
    t.reads_attention_bias = true;
    t.qk_norm = true;
    t.window_needs_flag = true;
    t.default_head_dim = 128;
    t.default_max_positions = 32768;
  } else {
    return r.Error(
        "model_type",
        absl::StrCat("\"", model_type, "\" is not supported (llama, mistral, qwen2, qwen3)"));
  }
  return t;
}

// `rope_scaling` (or the newer `rope_parameters`): null / absent / "default" = none.
absl::StatusOr<RopeScaling> ParseRopeScaling(const Json& value, const std::string& source,
                                             const std::string& key) {
  RopeScaling scaling;
  if (value.is_null()) return scaling;
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": `", key, "` must be an object or null, got ", value.dump()));
  }
  const FieldReader r(value, source, key + ".");
  // Older checkpoints spell it "type", newer ones "rope_type"; some write both.
  const char* type_key = r.Has("rope_type") ? "rope_type" : "type";
  if (!r.Has(type_key)) return scaling;  // e.g. rope_parameters holding only rope_theta.
  LY_ASSIGN_OR_RETURN(std::string type, r.String(type_key, std::nullopt));
  if (type == "default") return scaling;
  if (type == "linear") {
    scaling.type = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    scaling.type = RopeScalingType::kLlama3;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": `", key, ".rope_type` \"", type,
                     "\" is not supported (supported: linear, llama3)"));
  }
  LY_ASSIGN_OR_RETURN(scaling.factor, r.Number("factor", std::nullopt));
  if (scaling.factor <= 0) return r.Error("factor", "must be positive");
  if (scaling.type == RopeScalingType::kLlama3) {
    // transformers' _validate_llama3_parameters requires all of these.
    LY_ASSIGN_OR_RETURN(scaling.low_freq_factor, r.Number("low_freq_factor", std::nullopt));
    LY_ASSIGN_OR_RETURN(scaling.high_freq_factor, r.Number("high_freq_factor", std::nullopt));
    LY_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                        r.PositiveInt("original_max_position_embeddings", std::nullopt));
    if (scaling.high_freq_factor <= scaling.low_freq_factor) {
      return r.Error("high_freq_factor", "must be greater than low_freq_factor");
    }
  }
  return scaling;
}

// bos is an int or null; eos an int, a list of ints, or null.
absl::StatusOr<std::vector<int32_t>> TokenIds(const FieldReader& r, const char* key) {
  std::vector<int32_t> ids;
  if (!r.Has(key)) return ids;
  const Json& v = r.Get(key);
  auto add = [&](const Json& item) -> absl::Status {
    if (!item.is_number_integer() || item.get<int64_t>() < 0 ||
        item.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return r.Error(key, absl::StrCat("must hold non-negative token ids, got ", item.dump()));
    }
    ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
    return absl::OkStatus();
  };
  if (v.is_array()) {
    for (const Json& item : v) LY_RETURN_IF_ERROR(add(item));
  } else {
    LY_RETURN_IF_ERROR(add(v));
  }
  return ids;
}

absl::StatusOr<ModelConfig> ParseObject(const Json& root, const std::string& source) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": top level must be a JSON object"));
  }
  const FieldReader r(root, source);
  ModelConfig c;
  LY_ASSIGN_OR_RETURN(c.model_type, r.String("model_type", std::nullopt));
  LY_ASSIGN_OR_RETURN(const ArchTraits traits, TraitsFor(c.model_type, r));

  LY_ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size", std::nullopt));
  LY_ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size", std::nullopt));
  LY_ASSIGN_OR_RETURN(c.num_layers, r.PositiveInt("num_hidden_layers", std::nullopt));
  LY_ASSIGN_OR_RETURN(c.num_heads, r.PositiveInt("num_attention_heads", std::nullopt));
  LY_ASSIGN_OR_RETURN(c.num_kv_heads, r.PositiveInt("num_key_value_heads", c.num_heads));
  LY_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size", std::nullopt));
  LY_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      r.PositiveInt("max_position_embeddings", traits.default_max_positions));
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error(
        "num_key_value_heads",
        absl::StrCat("(", c.num_kv_heads, ") must divide num_attention_heads (", c.num_heads, ")"));
  }
  if (r.Has("head_dim") || traits.default_head_dim.has_value()) {
    LY_ASSIGN_OR_RETURN(c.head_dim, r.PositiveInt("head_dim", traits.default_head_dim));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return r.Error("hidden_size", absl::StrCat("(", c.hidden_size,
                                                 ") must be a multiple of num_attention_heads (",
                                                 c.num_heads, ") when head_dim is not given"));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }

  LY_ASSIGN_OR_RETURN(c.rms_norm_eps, r.Number("rms_norm_eps", 1e-6));
  if (c.rms_norm_eps <= 0) return r.Error("rms_norm_eps", "must be positive");
  // transformers v5 moves rope_theta and the scaling into `rope_parameters`.
  const bool has_rope_parameters = r.Has("rope_parameters");
  const FieldReader rope_params(has_rope_parameters ? r.Get("rope_parameters") : root, source,
                                has_rope_parameters ? "rope_parameters." : "");
  if (has_rope_parameters && !r.Get("rope_parameters").is_object()) {
    return r.Error("rope_parameters", "must be an object");
  }
  if (has_rope_parameters && rope_params.Has("rope_theta")) {
    LY_ASSIGN_OR_RETURN(c.rope_theta, rope_params.Number("rope_theta", std::nullopt));
  } else {
    LY_ASSIGN_OR_RETURN(c.rope_theta, r.Number("rope_theta", 10000.0));
  }
  if (c.rope_theta <= 0) return r.Error("rope_theta", "must be positive");
  if (r.Has("rope_scaling")) {
    LY_ASSIGN_OR_RETURN(c.rope_scaling,
                        ParseRopeScaling(r.Get("rope_scaling"), source, "rope_scaling"));
  } else if (has_rope_parameters) {
    LY_ASSIGN_OR_RETURN(c.rope_scaling,
                        ParseRopeScaling(r.Get("rope_parameters"), source, "rope_parameters"));
  }

  LY_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  if (traits.qkv_bias_always) {
    c.attention_bias = true;
  } else if (traits.reads_attention_bias) {
    LY_ASSIGN_OR_RETURN(c.attention_bias, r.Bool("attention_bias", false));
    // LlamaAttention / Qwen3Attention build o_proj with bias=attention_bias; Qwen2 never does.
    c.o_proj_bias = c.attention_bias;
  }
  c.qk_norm = traits.qk_norm;

  LY_ASSIGN_OR_RETURN(const std::string act, r.String("hidden_act", "silu"));
  if (act != "silu") {
    return r.Error("hidden_act", absl::StrCat("\"", act, "\" is not supported (only silu)"));
  }
  LY_ASSIGN_OR_RETURN(const bool mlp_bias, r.Bool("mlp_bias", false));
  if (mlp_bias) return r.Error("mlp_bias", "true is not supported");

  // Mistral applies `sliding_window` to every layer. Qwen2/3 only when `use_sliding_window`, and
  // then only to layers >= max_window_layers, which one window size cannot express.
  bool window_used = !traits.window_needs_flag;
  if (traits.window_needs_flag) {
    LY_ASSIGN_OR_RETURN(const bool use_window, r.Bool("use_sliding_window", false));
    if (use_window) {
      LY_ASSIGN_OR_RETURN(const int64_t max_window_layers,
                          r.Int("max_window_layers", c.num_layers));
      if (max_window_layers < c.num_layers) {
        return r.Error("use_sliding_window",
                       "true with max_window_layers < num_hidden_layers (per-layer sliding "
                       "window) is not supported");
      }
    }
    window_used = false;  // Either off, or on for no layer.
  }
  if (window_used) {
    const bool explicit_null = root.contains("sliding_window") && root["sliding_window"].is_null();
    if (!explicit_null) {
      LY_ASSIGN_OR_RETURN(c.sliding_window,
                          r.Int("sliding_window", traits.default_sliding_window.value_or(0)));
      if (c.sliding_window < 0) return r.Error("sliding_window", "must not be negative");
    }
  }

  LY_ASSIGN_OR_RETURN(const std::vector<int32_t> bos, TokenIds(r, "bos_token_id"));
  if (bos.size() > 1) return r.Error("bos_token_id", "must be a single id");
  if (!bos.empty()) c.bos_token_id = bos[0];
  LY_ASSIGN_OR_RETURN(c.eos_token_ids, TokenIds(r, "eos_token_id"));
  // transformers v4.56+ writes `dtype`; older files `torch_dtype`.
  LY_ASSIGN_OR_RETURN(c.torch_dtype, r.String("torch_dtype", ""));
  if (c.torch_dtype.empty()) {
    LY_ASSIGN_OR_RETURN(c.torch_dtype, r.String("dtype", ""));
  }
  return c;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  const std::string src(source);
  // The parse boundary: nlohmann reports syntax errors by value here, and FieldReader checks
  // every type before reading it, but keep exceptions from escaping whatever happens.
  try {
    const Json root = Json::parse(json_text.begin(), json_text.end(), nullptr,
                                  /*allow_exceptions=*/false);
    if (root.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": not valid JSON"));
    }
    return ParseObject(root, src);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = JoinPath(model_dir, "config.json");
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseModelConfig(text, path);
}

}  // namespace lychee
