// SPDX-License-Identifier: Apache-2.0
// EngineClient: everything a front end may ask of an engine. The in-process Engine implements
// it; a remote implementation over gRPC (lychee-gateway --upstream) can later, so the HTTP
// gateway and the gRPC service are written against this interface only.
//
// Thread-safety: every method may be called from any thread at any time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/request.h"
#include "engine/token_stream.h"

namespace lychee {

class Tokenizer;

struct ModelInfo {
  std::string model_id;  // served model name (the --served-model-name or folder name)
  std::string model_path;
  std::string model_type;  // llama, mistral, qwen2, qwen3
  int64_t vocab_size = 0;
  int64_t max_model_len = 0;  // prompt + generated tokens per request
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;
  std::string device;  // "cpu" or "cuda:0 (NVIDIA H100 ...)"
};

struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_kv_blocks_total = 0;
  int64_t num_kv_blocks_used = 0;
  int64_t block_size = 0;
  double kv_usage = 0;                  // used / total, in [0, 1]
  int64_t prefix_cache_queries = 0;     // tokens looked up (cumulative)
  int64_t prefix_cache_hits = 0;        // tokens found (cumulative)
  int64_t num_preemptions = 0;          // cumulative
  int64_t prompt_tokens_total = 0;      // cumulative
  int64_t generation_tokens_total = 0;  // cumulative
  double uptime_seconds = 0;
};

class EngineClient {
 public:
  virtual ~EngineClient() = default;

  // Validates and enqueues. Errors: InvalidArgument naming the field (empty prompt, token id out
  // of range, prompt + max_tokens over max_model_len, bad sampling values), AlreadyExists (a live
  // request has that id), ResourceExhausted (the waiting queue is full), Unavailable (draining).
  virtual absl::StatusOr<TokenStreamPtr> Submit(GenerationRequest request) = 0;

  // Aborts a live request by id; unknown ids are ignored (it may have just finished).
  virtual void Abort(const std::string& request_id) = 0;

  virtual EngineStats Stats() const = 0;
  virtual const ModelInfo& model_info() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
};

}  // namespace lychee
