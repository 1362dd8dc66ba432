// SPDX-License-Identifier: Apache-2.0
// CpuModel: one sequence as a series of one-chunk steps of CpuModelRunner over a private pool.
#include "engine/cpu_model.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/safetensors.h"

namespace lychee {
namespace {

// Block size of the private pool: any value works (the block table is trivial); 16 as the engine.
constexpr int64_t kBlockSize = 16;
// Context when the config names no max_position_embeddings.
constexpr int64_t kFallbackContext = 8192;

}  // namespace

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Load(const std::string& model_dir,
                                                         const CpuModelOptions& options) {
  LY_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  LY_ASSIGN_OR_RETURN(SafetensorsArchive archive, SafetensorsArchive::Open(model_dir));
  LY_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(archive, config));
  return Create(std::move(config), std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Create(ModelConfig config, ModelWeights weights,
                                                           const CpuModelOptions& options) {
  if (options.prefill_chunk <= 0 || options.max_context < 0) {
    return absl::InvalidArgumentError("prefill_chunk must be > 0 and max_context >= 0");
  }
  if (config.num_layers <= 0 || config.num_kv_heads <= 0 || config.head_dim <= 0) {
    return absl::InvalidArgumentError(
        "num_hidden_layers, num_key_value_heads and head_dim must be positive");
  }
  if (options.kv_cache_bytes < 0) return absl::InvalidArgumentError("kv_cache_bytes must be >= 0");
  KvCacheShape shape = KvCacheShapeFor(config, kBlockSize);
  shape.dtype = options.kv_cache_dtype;
  const int64_t budget =
      options.kv_cache_bytes > 0 ? options.kv_cache_bytes : DefaultCpuKvCacheBytes();
  int64_t capacity = options.max_context;
  if (capacity == 0) {
    capacity =
        config.max_position_embeddings > 0 ? config.max_position_embeddings : kFallbackContext;
    LY_ASSIGN_OR_RETURN(const int64_t fit_blocks, NumKvBlocksForBudget(shape, budget));
    capacity = std::min(capacity, fit_blocks * kBlockSize);
  } else if (options.kv_cache_bytes > 0 && KvBytesForTokens(shape, capacity) > budget) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context ", capacity, " needs ", KvBytesForTokens(shape, capacity) >> 20,
                     " MiB of KV cache, more than kv_cache_bytes (", budget >> 20, " MiB)"));
  }
  std::unique_ptr<CpuModel> m(new CpuModel());
  m->max_context_ = capacity;
  // No chunk is longer than the context, so no scratch beyond it.
  m->prefill_chunk_ = std::min(options.prefill_chunk, capacity);
  const int64_t num_blocks = (capacity + kBlockSize - 1) / kBlockSize;
  m->pool_ = std::make_unique<KvPool>(shape, num_blocks);
  CpuModelRunnerOptions runner_options;
  runner_options.max_num_batched_tokens = m->prefill_chunk_;
  runner_options.max_num_seqs = 1;
  LY_ASSIGN_OR_RETURN(m->runner_, CpuModelRunner::Create(config, std::move(weights), m->pool_.get(),
                                                         runner_options));
  m->block_table_.resize(static_cast<size_t>(num_blocks));
  std::iota(m->block_table_.begin(), m->block_table_.end(), 0);
  m->step_.chunks.resize(1);
  m->step_.chunks[0].block_table = m->block_table_;
  return m;
}

absl::StatusOr<absl::Span<const float>> CpuModel::Decode(int32_t token, sparsity::Policy* policy) {
  if (policy == nullptr) return Prefill(absl::MakeConstSpan(&token, 1), LogitsMode::kLast);
  if (token < 0 || token >= vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", token, " outside the vocabulary"));
  }
  if (num_tokens_ + 1 > max_context_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the sequence would exceed the context of ", max_context_, " tokens"));
  }
  decode_token_ = token;
  return Step(absl::MakeConstSpan(&decode_token_, 1), /*last_row_logits=*/true, nullptr, policy);
}

absl::StatusOr<absl::Span<const float>> CpuModel::Prefill(absl::Span<const int32_t> tokens,
                                                          LogitsMode mode) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t vocab = vocab_size();
  if (n == 0) return absl::InvalidArgumentError("Prefill needs at least one token");
  // Checked up front (the runner checks each chunk again) so a bad id in a later chunk leaves
  // the sequence as it was.
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", tokens[i], " at index ", i, " is outside [0, ", vocab, ")"));
    }
  }
  if (n > max_context_ - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sequence of ", num_tokens_ + n, " tokens exceeds the context of ", max_context_));
  }
  if (mode == LogitsMode::kAll && static_cast<int64_t>(logits_.size()) < n * vocab) {
    logits_.resize(static_cast<size_t>(n * vocab));
  }
  absl::Span<const float> last;
  for (int64_t start = 0; start < n; start += prefill_chunk_) {
    const int64_t len = std::min(prefill_chunk_, n - start);
    const auto chunk = tokens.subspan(static_cast<size_t>(start), static_cast<size_t>(len));
    if (mode == LogitsMode::kAll) {
      LY_RETURN_IF_ERROR(
          Step(chunk, /*last_row_logits=*/false, logits_.data() + start * vocab).status());
    } else {
      // Only the final chunk's last row is wanted: earlier chunks skip the LM head.
      LY_ASSIGN_OR_RETURN(last, Step(chunk, /*last_row_logits=*/start + len == n, nullptr));
    }
  }
  if (mode == LogitsMode::kAll) {
    return absl::MakeConstSpan(logits_.data(), static_cast<size_t>(n * vocab));
  }
  return last;
}

absl::StatusOr<absl::Span<const float>> CpuModel::Step(absl::Span<const int32_t> tokens,
                                                       bool last_row_logits,
                                                       float* maybe_all_logits,
                                                       sparsity::Policy* policy) {
  ScheduledChunk& chunk = step_.chunks[0];
  chunk.token_ids = tokens;
  chunk.start_position = num_tokens_;
  chunk.needs_logits = last_row_logits;
  chunk.is_decode = policy != nullptr;  // Decode through a policy: a real decode step
  step_.num_batched_tokens = static_cast<int64_t>(tokens.size());
  absl::Span<const float> logits;
  if (maybe_all_logits != nullptr) {
    const size_t size = tokens.size() * static_cast<size_t>(vocab_size());
    LY_RETURN_IF_ERROR(runner_->ExecuteAllLogits(step_, absl::MakeSpan(maybe_all_logits, size)));
  } else {
    sparsity::Policy* const policies[] = {policy};
    LY_ASSIGN_OR_RETURN(
        logits,
        runner_->Execute(step_, policy != nullptr ? absl::Span<sparsity::Policy* const>(policies)
                                                  : absl::Span<sparsity::Policy* const>()));
  }
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return logits;
}

}  // namespace lychee
