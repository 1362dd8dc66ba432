// SPDX-License-Identifier: Apache-2.0
// lychee-generate: one prompt, one sequence, the CPU forward pass; streams the generated text to
// stdout as tokens arrive and prints timing to stderr.
//
//   lychee-generate --model DIR --prompt TEXT --max-tokens N [--temperature T --top-k K
//                   --top-p P --seed S] [--stop STR]... [--chat [--system TEXT]] [--no-bos]
//
// One engine thread; GEMMs and attention run on kernels/cpu's thread team (--threads). Generation
// stops at max-tokens, at the end of the context, at a stop string (not printed), or at an
// end-of-sequence id: the union of config.json's eos_token_id, generation_config.json's
// eos_token_id and the tokenizer's EOS (as transformers' generate() does with generation_config).
// BOS is not a stop id, so stories260K runs past the point where llama2.c (which stops on BOS)
// would end a story. Exit status: 0 on success, 1 on bad flags, a missing model or any runtime
// error.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/file.h"
#include "common/status.h"
#include "engine/cpu_model.h"
#include "engine/eos_tokens.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kvcache/kv_pool.h"
#include "model/chat_template/chat_template.h"
#include "model/chat_template/model_chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee {
namespace {

struct Flags {
  std::string model_dir;
  std::string prompt;
  int64_t max_tokens = 128;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int64_t seed = -1;  // < 0: random
  std::vector<std::string> stop;
  bool chat = false;
  std::string system;
  std::string chat_template;  // built-in template name overriding the model's
  bool no_bos = false;
  int64_t max_context = 0;
  int64_t kv_cache_bytes = 0;
  std::string kv_cache_dtype = "auto";
  int threads = 0;
  bool verbose = false;
};

// The prompt as token ids: plain text (BOS per the tokenizer unless --no-bos) or one chat turn
// rendered with the model's template (whose text carries its own special tokens).
absl::StatusOr<ChatTemplate> LoadChatTemplate(const Flags& flags, const Tokenizer& tokenizer) {
  if (!flags.chat_template.empty()) return ChatTemplate::BuiltIn(flags.chat_template);
  LY_ASSIGN_OR_RETURN(ModelChatTemplate loaded, LoadModelChatTemplate(flags.model_dir, tokenizer));
  if (loaded.description != "the model's chat template") {
    std::fprintf(stderr, "[lychee-generate] %s has no chat template; using %s\n",
                 flags.model_dir.c_str(), loaded.description.c_str());
  }
  return std::move(loaded.chat_template);
}

// The prompt as token ids: plain text (BOS per the tokenizer unless --no-bos) or one chat turn
// rendered with the chat template. The rendered text carries the template's own special tokens,
// so it is encoded without adding any (as apply_chat_template does); BOS is prepended only when
// the tokenizer adds BOS to plain text and the template did not write it.
absl::StatusOr<std::vector<int32_t>> PromptIds(const Flags& flags, const Tokenizer& tokenizer,
                                               const ModelConfig& config) {
  std::vector<int32_t> ids;
  if (flags.chat) {
    LY_ASSIGN_OR_RETURN(ChatTemplate tmpl, LoadChatTemplate(flags, tokenizer));
    nlohmann::json messages = nlohmann::json::array();
    if (!flags.system.empty()) {
      messages.push_back({{"role", "system"}, {"content", flags.system}});
    }
    messages.push_back({{"role", "user"}, {"content", flags.prompt}});
    LY_ASSIGN_OR_RETURN(std::string text, tmpl.Render(messages, /*add_generation_prompt=*/true,
                                                      nlohmann::json::object()));
    ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
    const std::optional<int32_t> bos = tokenizer.bos_id();
    if (!flags.no_bos && tokenizer.add_bos() && bos && (ids.empty() || ids[0] != *bos)) {
      ids.insert(ids.begin(), *bos);
    }
  } else {
    ids = tokenizer.Encode(flags.prompt, /*add_special_tokens=*/!flags.no_bos);
  }
  if (ids.empty()) {
    // An empty prompt still needs one token to condition on: start from BOS alone.
    std::optional<int32_t> bos = tokenizer.bos_id();
    if (!bos && config.bos_token_id >= 0) bos = config.bos_token_id;
    if (!bos) return absl::InvalidArgumentError("empty prompt and the model has no BOS token");
    ids.push_back(*bos);
  }
  return ids;
}

int Run(const Flags& flags) {
  if (!DirectoryExists(flags.model_dir)) {
    std::fprintf(stderr, "lychee-generate: model directory not found: %s\n",
                 flags.model_dir.c_str());
    return 1;
  }
  // Before Load: the runner sizes its attention workspace for this many threads.
  if (flags.threads > 0) cpu::SetNumThreads(flags.threads);
  // auto: DefaultCpuKvDtype of the context (bf16 beyond 8192 tokens).
  KvDtype kv_dtype = KvDtype::kFp32;
  if (flags.kv_cache_dtype == "auto") {
    int64_t context = flags.max_context;
    if (context == 0) {
      auto config = LoadModelConfig(flags.model_dir);
      if (config.ok()) context = config->max_position_embeddings;
    }
    kv_dtype = DefaultCpuKvDtype(context);
  } else {
    auto parsed = ParseKvDtype(flags.kv_cache_dtype);
    if (!parsed.ok()) {
      std::fprintf(stderr, "lychee-generate: --kv-cache-dtype: %s\n",
                   std::string(parsed.status().message()).c_str());
      return 1;
    }
    kv_dtype = *parsed;
  }
  auto model_or =
      CpuModel::Load(flags.model_dir, CpuModelOptions{.max_context = flags.max_context,
                                                      .kv_cache_bytes = flags.kv_cache_bytes,
                                                      .kv_cache_dtype = kv_dtype});
  if (!model_or.ok()) {
    std::fprintf(stderr, "lychee-generate: cannot load model from %s: %s\n",
                 flags.model_dir.c_str(), model_or.status().ToString().c_str());
    return 1;
  }
  CpuModel& model = **model_or;
  auto tokenizer_or = Tokenizer::FromDirectory(flags.model_dir);
  if (!tokenizer_or.ok()) {
    std::fprintf(stderr, "lychee-generate: cannot load tokenizer from %s: %s\n",
                 flags.model_dir.c_str(), tokenizer_or.status().ToString().c_str());
    return 1;
  }
  const Tokenizer& tokenizer = **tokenizer_or;

  auto eos_or = CollectEosTokenIds(flags.model_dir, model.config(), tokenizer);
  if (!eos_or.ok()) {
    std::fprintf(stderr, "lychee-generate: %s\n", eos_or.status().ToString().c_str());
    return 1;
  }
  std::vector<int32_t> stop_ids = *std::move(eos_or);

  auto prompt_or = PromptIds(flags, tokenizer, model.config());
  if (!prompt_or.ok()) {
    std::fprintf(stderr, "lychee-generate: %s\n", prompt_or.status().ToString().c_str());
    return 1;
  }
  const std::vector<int32_t>& prompt = *prompt_or;
  if (flags.verbose) {
    std::string ids;
    for (int32_t id : prompt) ids += (ids.empty() ? "" : " ") + std::to_string(id);
    std::fprintf(stderr,
                 "[lychee-generate] prompt ids (%zu): %s\n[lychee-generate] prompt text: %s\n",
                 prompt.size(), ids.c_str(), tokenizer.Decode(prompt, false).c_str());
    std::string stops;
    for (int32_t id : stop_ids) stops += (stops.empty() ? "" : " ") + std::to_string(id);
    std::fprintf(stderr, "[lychee-generate] stop ids: %s\n", stops.c_str());
    std::fprintf(stderr, "[lychee-generate] KV cache: %lld tokens, %s\n",
                 static_cast<long long>(model.max_context()), KvDtypeName(kv_dtype));
  }

  SamplingParams params;
  params.temperature = flags.temperature;
  params.top_k = flags.top_k;
  params.top_p = flags.top_p;
  params.min_p = flags.min_p;
  params.repetition_penalty = flags.repetition_penalty;
  params.has_seed = flags.seed >= 0;
  params.seed = params.has_seed ? static_cast<uint64_t>(flags.seed) : std::random_device{}();
  if (absl::Status s = ValidateSamplingParams(params); !s.ok()) {
    std::fprintf(stderr, "lychee-generate: %s\n", s.ToString().c_str());
    return 1;
  }
  Sampler sampler(params, params.seed);

  StreamDecoder decoder(tokenizer);
  StopStringMatcher stops(flags.stop);
  auto emit = [](const std::string& text) {
    if (text.empty()) return;
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };

  const auto t0 = std::chrono::steady_clock::now();
  auto logits = model.Prefill(prompt, LogitsMode::kLast);
  if (!logits.ok()) {
    std::fprintf(stderr, "lychee-generate: %s\n", logits.status().ToString().c_str());
    return 1;
  }
  const auto t_prefill = std::chrono::steady_clock::now();

  std::vector<int32_t> output;
  std::vector<float> row;
  const char* reason = "max-tokens";
  while (static_cast<int64_t>(output.size()) < flags.max_tokens) {
    row.assign(logits->begin(), logits->end());
    const int32_t next = sampler.Sample(absl::MakeSpan(row), prompt, output);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      reason = "eos";
      break;
    }
    output.push_back(next);
    const StopStringMatcher::Result shown = stops.Push(decoder.Push(next));
    emit(shown.text);
    if (shown.stopped) {
      reason = "stop string";
      break;
    }
    if (static_cast<int64_t>(output.size()) == flags.max_tokens) break;
    if (model.num_tokens() >= model.max_context()) {
      reason = "context full";
      break;
    }
    logits = model.Decode(next);
    if (!logits.ok()) {
      std::fprintf(stderr, "\nlychee-generate: %s\n", logits.status().ToString().c_str());
      return 1;
    }
  }
  if (std::string(reason) != "stop string") {
    const StopStringMatcher::Result tail = stops.Push(decoder.Flush());
    emit(tail.text);
    if (!tail.stopped) emit(stops.Flush());
  }
  const auto t1 = std::chrono::steady_clock::now();
  const double total_s = std::chrono::duration<double>(t1 - t0).count();
  const double prefill_s = std::chrono::duration<double>(t_prefill - t0).count();
  // A terminal gets a final newline; pipes get exactly the generated text.
  if (isatty(fileno(stdout))) std::fputc('\n', stdout);
  std::fflush(stdout);
  std::fprintf(stderr,
               "[lychee-generate] %zu tokens in %.3f s (%.0f tok/s), prompt %zu tokens "
               "(prefill %.4f s), stopped by %s\n",
               output.size(), total_s, total_s > 0 ? output.size() / total_s : 0.0, prompt.size(),
               prefill_s, reason);
  return 0;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) {
  // Library logs go to stderr: stdout carries only the generated text.
  spdlog::set_default_logger(spdlog::stderr_color_mt("lychee-generate"));

  lychee::Flags flags;
  CLI::App app{"lychee-generate: generate text with the CPU forward pass"};
  app.add_option("--model", flags.model_dir,
                 "Model directory (config.json, safetensors, tokenizer)")
      ->required();
  app.add_option("--prompt", flags.prompt, "Prompt text (empty: start from BOS)");
  app.add_option("--max-tokens", flags.max_tokens, "Generated tokens at most")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--temperature", flags.temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0f, 100.0f));
  app.add_option("--top-k", flags.top_k, "Keep the k most likely tokens (0: off)");
  app.add_option("--top-p", flags.top_p, "Nucleus sampling mass (1: off)");
  app.add_option("--min-p", flags.min_p, "Minimum probability relative to the best (0: off)");
  app.add_option("--repetition-penalty", flags.repetition_penalty, "1: off");
  app.add_option("--seed", flags.seed, "Sampling seed (default: random)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stop", flags.stop, "Stop string (repeatable); not printed");
  app.add_flag("--chat", flags.chat, "Render --prompt as one user turn with the chat template");
  app.add_option("--system", flags.system, "System message for --chat");
  app.add_option("--chat-template", flags.chat_template,
                 "Built-in chat template (llama3, chatml, mistral) instead of the model's");
  app.add_flag("--no-bos", flags.no_bos, "Do not add BOS to a plain prompt");
  app.add_option("--max-context", flags.max_context,
                 "KV cache capacity in tokens (0: the model's max_position_embeddings, as far as "
                 "--kv-cache-bytes allows)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv-cache-bytes", flags.kv_cache_bytes,
                 "KV cache memory, e.g. 2GiB or 512MiB (0: a quarter of the RAM)")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/false));
  app.add_option("--kv-cache-dtype", flags.kv_cache_dtype,
                 "KV cache storage: fp32, bf16, or auto (bf16 when the context exceeds 8192 "
                 "tokens)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  app.add_option("--threads", flags.threads,
                 "CPU threads (0: OPENBLAS_NUM_THREADS or all cores; tiny GEMMs stay on one)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--verbose", flags.verbose, "Print the prompt ids/text and stop ids to stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lychee-generate: %s\nRun with --help for usage.\n", e.what());
    return 1;
  }
  if ((flags.system.size() > 0 || !flags.chat_template.empty()) && !flags.chat) {
    std::fprintf(stderr, "lychee-generate: --system and --chat-template need --chat\n");
    return 1;
  }
  return lychee::Run(flags);
}
