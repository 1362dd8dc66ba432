// SPDX-License-Identifier: Apache-2.0
// Engine: the in-process EngineClient. One step-loop thread owns the scheduler, the KV cache and
// the model runner; Submit/Abort/Stats are thread-safe and only exchange messages with it.
//
//   front ends ──Submit──► inbox ──► [engine thread: Schedule → Execute → sample → Update
//                                      → push GenerationOutput to each request's TokenStream]
//
// The loop is deterministic for a given arrival order (seeded sampling), which makes tests exact.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine_client.h"
#include "engine/engine_observer.h"
#include "kvcache/paged_kv_view.h"

namespace lychee {

struct EngineConfig {
  std::string model_dir;
  std::string served_model_name;        // default: the model folder's name
  std::string tokenizer_dir;            // default: model_dir (synthetic models need one)
  std::string device = "auto";          // auto (CUDA when a GPU is usable), cpu, cuda, cuda:N
  double gpu_memory_utilization = 0.9;  // CUDA: fraction of device memory for weights + KV
  bool enforce_eager = false;           // CUDA: true runs decode steps without CUDA graphs
  bool device_sampling = true;          // CUDA: sample on the GPU (kernels/cuda/sampling.h);
                                        // false: logits go back to the host Sampler
  int64_t block_size = 16;              // KV cache tokens per block
  int64_t kv_cache_bytes = 0;           // KV pool size; 0: CPU: enough for max_num_seqs full
                                        // contexts (<= a quarter of RAM, kv_pool.h); CUDA:
                                        // gpu_memory_utilization
  // CPU: K/V page storage, fp32 (the reference) or bf16 (half the bytes); nullopt: by the
  // served context (DefaultCpuKvDtype of max_model_len: bf16 beyond 8192 tokens).
  std::optional<KvDtype> cpu_kv_cache_dtype;
  int64_t num_kv_blocks_override = 0;     // > 0: exactly this many KV blocks (tests, tuning)
  int64_t max_num_seqs = 16;              // requests in one step at most
  int64_t max_num_batched_tokens = 1024;  // tokens in one step at most (prefill chunks + decodes)
  int64_t max_model_len = 0;              // prompt + output per request; 0: the model's limit
  int64_t max_queue_len = 256;            // waiting requests beyond this get ResourceExhausted
  bool enable_prefix_caching = true;
  uint64_t seed = 0;  // seeds requests that give no seed of their own
  // LycheeDecode's head-role mask (lychee_head_roles.json); empty: <model>/lychee_head_roles.json
  // if present (else `lychee` is refused per request).
  std::string head_roles_path;
};

// The name clients and metrics see: served_model_name, or else the model folder's name.
std::string ServedModelName(const EngineConfig& config);

class Engine final : public EngineClient {
 public:
  // Loads model and tokenizer, sizes the KV pool, and starts the step thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineConfig& config,
                                                        EngineObserver* maybe_observer = nullptr);
  ~Engine() override;  // Shutdown(absl::ZeroDuration()) if still running

  absl::StatusOr<TokenStreamPtr> Submit(GenerationRequest request) override;
  void Abort(const std::string& request_id) override;
  EngineStats Stats() const override;
  const ModelInfo& model_info() const override;
  const Tokenizer& tokenizer() const override;
  // The policy names a request may use here (sparsity::AvailablePolicies less those this model
  // or backend refuses: lychee without a head-role mask, the GPU's refusals), for GetServerInfo.
  std::vector<std::string> ServedPolicies() const;

  // Stops accepting requests (Submit → Unavailable), lets live ones finish for up to `grace`,
  // aborts the rest, and joins the step thread. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lychee
