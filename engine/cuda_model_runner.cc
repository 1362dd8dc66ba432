// SPDX-License-Identifier: Apache-2.0
// CudaModelRunner: (1) Create: device, weights, scratch, KV pool sizing; (2) the step's packed
// inputs; (3) the layer loop; (4) the LM head and the logits' copy back.
#include "engine/cuda_model_runner.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "engine/cpu_packed_weights.h"
#include "engine/cuda_graph_cache.h"
#include "engine/cuda_sparse_decode.h"
#include "engine/cuda_weights.h"
#include "engine/step_check.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/block_select.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/runner_ops.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/skinny_gemm.h"

namespace lychee {
namespace {

using cuda::bf16;

// Pinned host memory (the step's packed inputs and the logits coming back): asynchronous
// copies need it, and it is allocated once.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  [[nodiscard]] absl::Status Allocate(size_t count) {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    count_ = 0;
    void* p = nullptr;
    LY_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, std::max<size_t>(count, 1) * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    count_ = count;
    return absl::OkStatus();
  }
  T* get() const { return ptr_; }
  size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Byte offsets of the step's inputs inside the packed buffer (host and device alike).
struct StepLayout {
  size_t ids = 0, positions = 0, slots = 0, row_seq = 0, logit_rows = 0, context_lens = 0,
         tiles = 0, block_tables = 0, total = 0;
};

// Device sampling's buffers (host and device alike). Inputs: [max_chunks] SamplingRow, then the
// penalty ids and counts of the step's rows ([penalty_capacity] int32 each). Outputs: tokens,
// logprobs, top logprobs of up to max_chunks rows.
struct SampleLayout {
  size_t ids = 0, counts = 0, in_total = 0;
  size_t logprobs = 0, top = 0, out_total = 0;
};

// Penalty entries the sampling buffers hold at first; they grow (doubling) when a step needs
// more (long prompts with a repetition penalty).
constexpr int64_t kInitialPenaltyCapacity = 16384;
static_assert(kMaxTopLogprobs == cuda::kMaxTopLogprobs);
static_assert(sizeof(cuda::TopLogprobEntry) == sizeof(TokenLogprob));

}  // namespace

struct CudaModelRunner::Impl {
  ModelConfig config;
  CudaModelRunnerOptions options;
  cuda::DeviceInfo device;
  cudaStream_t stream = nullptr;
  // A hybrid sparse step's second stream: each layer's selection and dropped mass run there
  // beside the main stream's work, ordered by the four events (HybridSparseAttention; captured
  // into graphs as edges).
  cudaStream_t side_stream = nullptr;
  cudaEvent_t fork_event = nullptr, scored_event = nullptr, attended_event = nullptr,
              side_done_event = nullptr;
  bool side_pending = false;  // the side stream has work of this step not yet joined
  std::unique_ptr<CudaWeights> weights;
  std::unique_ptr<cuda::LtGemm> gemm;

  int64_t q_dim = 0, kv_dim = 0, qkv_dim = 0;
  int64_t max_rows = 0;    // max_num_batched_tokens
  int64_t max_chunks = 0;  // min(max_num_seqs, max_rows)
  int64_t max_blocks_per_seq = 0;
  int64_t max_tiles = 0;
  bool fast_attention = false;  // decode + prefill kernels support the shape

  // Device scratch.
  cuda::DeviceBuffer<bf16> resid, h, qkv, attn, delta, gate_up, act, logit_hidden;
  cuda::DeviceBuffer<float> logits_d, inv_freq;
  cuda::DeviceBuffer<uint8_t> gemm_workspace, decode_workspace, step_inputs_d;
  size_t decode_workspace_bytes = 0;
  cuda::DeviceBuffer<int32_t> decode_split_counters;     // zeroed once; the kernel leaves them zero
  cuda::DecodeAttentionPlanOptions decode_plan_options;  // CTAs per SM from the occupancy
  PinnedBuffer<uint8_t> step_inputs_h;
  PinnedBuffer<float> logits_h;

  // The KV pool: [layers][num_blocks][2][kv_heads][block_size][head_dim] bf16, and with sparse
  // policies its key summaries [layers][num_blocks][kv_heads][2][head_dim] bf16.
  cuda::DeviceBuffer<bf16> kv, key_summary;
  int64_t num_blocks = 0;
  std::unique_ptr<CudaSparseDecode> sparse;  // null: dense only (see SupportsPolicy)
  bool last_step_sparse = false;

  // Device sampling (kernels/cuda/sampling.h).
  cuda::DeviceBuffer<uint8_t> sample_in_d, sample_out_d, sample_workspace;
  PinnedBuffer<uint8_t> sample_in_h, sample_out_h;
  int64_t penalty_capacity = 0;
  SampleLayout sample_layout;
  std::vector<TokenLogprob> top_h;  // [max_chunks * kMaxTopLogprobs]

  std::vector<SparseChunkStats> stats;     // defaults per chunk: this backend runs dense only
  std::vector<cuda::PrefillTile> tiles_h;  // reused per step
  std::vector<int32_t> decode_ctx_h;       // reused per step
  CudaGraphCache graphs;                   // decode steps

  cuda::PagedKvBf16 LayerCache(int64_t layer) const {
    cuda::PagedKvBf16 c;
    c.num_blocks = num_blocks;
    c.num_kv_heads = config.num_kv_heads;
    c.block_size = options.block_size;
    c.head_dim = config.head_dim;
    c.kv = kv.get() + layer * num_blocks * c.block_stride();
    if (key_summary.get() != nullptr) {
      c.key_summary = key_summary.get() + layer * num_blocks * c.summary_block_stride();
    }
    return c;
  }

  absl::Status AllocateScratch();
  absl::Status SizeKvPool();
  StepLayout Layout(int64_t rows, int64_t chunks, int64_t tiles, int64_t width) const;
  absl::Status Upload(const SchedulerOutput& step, int64_t rows, int64_t logit_rows,
                      int64_t* num_decodes, int64_t* width, StepLayout* layout);
  // The sizes a step's kernels are launched with (fixed at capture for a graph).
  struct Forward {
    int64_t rows = 0;            // token rows
    int64_t num_chunks = 0;      // block-table rows
    int64_t num_decodes = 0;     // leading rows through the decode kernel
    int64_t width = 1;           // block-table row stride
    int64_t max_decode_ctx = 1;  // the decode plan's length cap
    int64_t num_tiles = 0;       // prefill tiles
    int64_t logit_rows = 0;
    bool sparse = false;  // the decode rows run their policies (CudaSparseDecode)
  };
  absl::Status UploadPaddedDecode(const SchedulerOutput& step, int64_t bucket, int64_t* max_ctx,
                                  StepLayout* layout);
  // The step's forward pass (RunForward), then the side stream joined, whatever happened.
  absl::Status Run(const Forward& f, const StepLayout& layout);
  absl::Status RunForward(const Forward& f, const StepLayout& layout);
  absl::Status Layer(int64_t layer, const Forward& f, const StepLayout& layout);
  absl::Status Attention(int64_t layer, const Forward& f, const StepLayout& layout);
  // One part of a sparse step's decode attention (see there); d's tables and lengths are the
  // part's; part 1 is planned for rows of at most part1_tokens tokens.
  absl::Status SparseDecodeAttentionPart(int64_t layer, const Forward& f,
                                         const cuda::DecodeAttentionParams& d, int part,
                                         int64_t part1_tokens);
  // A hybrid step's sparse attention of `layer` (CudaSparseDecode::hybrid()): the one launch on
  // the main stream, the selection and the dropped mass on the side stream (see there).
  absl::Status HybridSparseAttention(int64_t layer, const Forward& f,
                                     const cuda::DecodeAttentionParams& d,
                                     const cuda::DecodeAttentionParams& dense,
                                     const cuda::DecodeAttentionPlan& plan);
  absl::Status HybridDecodeAttention(int64_t layer, const Forward& f,
                                     const cuda::DecodeAttentionParams& d);
  // An audited step's dense attention of the decode rows into the audit buffers: their LSE for
  // the exact dropped mass, or null when the step is not audited.
  absl::StatusOr<const float*> AuditAttention(const cuda::DecodeAttentionParams& dense,
                                              const cuda::DecodeAttentionPlan& plan);
  // The main stream waits for the side stream's last work of the step (a hybrid step's
  // selection and dropped mass), before the step's results are read or its capture ends.
  absl::Status JoinSideStream();
  // d over `rows` rows of `list`, planned as planned_rows rows of planned_tokens tokens alone.
  absl::Status AttendRowList(const cuda::DecodeAttentionParams& d, const int32_t* list,
                             int64_t rows, int64_t planned_rows, int64_t planned_tokens);
  absl::StatusOr<absl::Span<const float>> CopyLogits(int64_t logit_rows);
  // After the stream's sync: the sparse stats of the step just run.
  void CollectSparseStats(const SchedulerOutput& step) {
    if (last_step_sparse) sparse->CollectStats(step, &stats);
  }
  // Checks the step and enqueues its forward pass up to the logits (logits_d); returns the
  // number of logit rows. Nothing is synchronised.
  absl::StatusOr<int64_t> EnqueueForward(const SchedulerOutput& step,
                                         absl::Span<sparsity::Policy* const> policies);
  // Device sampling: buffers for `entries` penalty entries (reallocated only to grow), the rows'
  // inputs uploaded (asynchronously), the kernel, and the results copied back (synchronously).
  absl::Status EnsurePenaltyCapacity(int64_t entries);
  absl::Status UploadSampling(absl::Span<const DeviceSamplingInput> rows);
  absl::StatusOr<DeviceSampledTokens> SampleRows(int64_t logit_rows);
  absl::Status Gemm(const bf16* x, const bf16* w, void* y, int64_t m, int64_t n, int64_t k,
                    cuda::GemmOutType out = cuda::GemmOutType::kBf16) {
    cuda::GemmArgs a;
    a.x = x;
    a.w = w;
    a.y = y;
    a.m = m;
    a.n = n;
    a.k = k;
    a.out_type = out;
    if (options.decode_gemm == CudaDecodeGemm::kSkinny && cuda::CanImplementSkinnyGemm(a).ok()) {
      a.backend = cuda::GemmBackend::kSkinny;
    }
    return gemm->Run(a, gemm_workspace.get(), gemm_workspace.bytes(), stream);
  }
  template <typename T>
  const T* At(size_t offset) const {
    return reinterpret_cast<const T*>(step_inputs_d.get() + offset);
  }
};

// ---- (1) Create --------------------------------------------------------------------------------

absl::Status CudaModelRunner::Impl::AllocateScratch() {
  const int64_t t = max_rows;
  const int64_t hidden = config.hidden_size;
  const int64_t inter = CudaPaddedIntermediate(config);
  auto n = [](int64_t v) { return static_cast<size_t>(v); };
  LY_RETURN_IF_ERROR(resid.Allocate(n(t * hidden)));
  LY_RETURN_IF_ERROR(h.Allocate(n(t * std::max(hidden, q_dim))));
  LY_RETURN_IF_ERROR(qkv.Allocate(n(t * qkv_dim)));
  LY_RETURN_IF_ERROR(attn.Allocate(n(t * q_dim)));
  LY_RETURN_IF_ERROR(delta.Allocate(n(t * hidden)));
  LY_RETURN_IF_ERROR(gate_up.Allocate(n(t * 2 * inter)));
  LY_RETURN_IF_ERROR(act.Allocate(n(t * inter)));
  LY_RETURN_IF_ERROR(logit_hidden.Allocate(n(max_chunks * hidden)));
  LY_RETURN_IF_ERROR(logits_d.Allocate(n(max_chunks * config.vocab_size)));
  LY_RETURN_IF_ERROR(logits_h.Allocate(n(max_chunks * config.vocab_size)));
  LY_RETURN_IF_ERROR(gemm_workspace.Allocate(cuda::kGemmWorkspaceBytes));

  std::vector<float> freq(n(config.head_dim / 2));
  cpu::ComputeRopeInvFreq(RopeParamsFor(config), freq.data());
  LY_RETURN_IF_ERROR(inv_freq.Upload(freq));

  // The decode kernel's split workspace: the most any batch size needs at full length.
  if (fast_attention) {
    LY_ASSIGN_OR_RETURN(decode_plan_options.ctas_per_sm,
                        cuda::DecodeAttentionCtasPerSm(config.head_dim, decode_plan_options.stages,
                                                       decode_plan_options.loader));
    LY_ASSIGN_OR_RETURN(
        decode_plan_options.long_split_ctas_per_sm,
        cuda::DecodeAttentionCtasPerSm(config.head_dim, 2, decode_plan_options.loader));
    LY_RETURN_IF_ERROR(decode_split_counters.Allocate(
        n(max_chunks * config.num_kv_heads * cuda::kDecodeSplitCountersPerRow)));
    LY_RETURN_IF_ERROR(decode_split_counters.FillBytes(0));
    // Dense batches, and (sparse steps) row lists of a part's rows planned alone, at full length.
    cuda::DecodeAttentionShape largest;
    largest.batch = max_chunks;
    largest.num_heads = config.num_heads;
    largest.num_kv_heads = config.num_kv_heads;
    largest.head_dim = config.head_dim;
    largest.block_size = options.block_size;
    largest.max_blocks_per_seq = max_blocks_per_seq;
    largest.max_context_len = max_blocks_per_seq * options.block_size;
    decode_workspace_bytes = cuda::DecodeAttentionMaxWorkspaceBytes(
        largest, device.num_sms, decode_plan_options, options.sparse_policies);
    LY_RETURN_IF_ERROR(decode_workspace.Allocate(std::max<size_t>(decode_workspace_bytes, 16)));
  }

  // Step inputs at their largest.
  const StepLayout most = Layout(t, max_chunks, max_tiles, max_blocks_per_seq);
  LY_RETURN_IF_ERROR(step_inputs_d.Allocate(most.total));
  LY_RETURN_IF_ERROR(step_inputs_h.Allocate(most.total));
  if (options.device_sampling) {
    LY_RETURN_IF_ERROR(EnsurePenaltyCapacity(kInitialPenaltyCapacity));
    top_h.resize(n(max_chunks * kMaxTopLogprobs));
  }
  stats.reserve(n(max_chunks));
  tiles_h.reserve(n(max_tiles));
  decode_ctx_h.reserve(n(max_chunks));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Impl::SizeKvPool() {
  const int64_t kv_block_bytes = config.num_layers * 2 * config.num_kv_heads * options.block_size *
                                 config.head_dim * static_cast<int64_t>(sizeof(bf16));
  const int64_t summary_block_bytes = sparse == nullptr ? 0
                                                        : config.num_layers * config.num_kv_heads *
                                                              2 * config.head_dim *
                                                              static_cast<int64_t>(sizeof(bf16));
  const int64_t block_bytes = kv_block_bytes + summary_block_bytes;
  size_t free_bytes = 0, total_bytes = 0;
  LY_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  int64_t budget = options.kv_cache_bytes;
  if (budget <= 0) {
    // What this process may hold in all, minus what is in use already (ours and others').
    const double allowed = options.gpu_memory_utilization * static_cast<double>(total_bytes);
    budget = static_cast<int64_t>(allowed) - static_cast<int64_t>(total_bytes - free_bytes);
  }
  // More blocks than max_num_seqs full-length sequences can use twice over (the second half
  // serves the prefix cache) would only cost host bookkeeping.
  const int64_t useful_blocks = 2 * max_chunks * max_blocks_per_seq;
  num_blocks = std::min(budget / block_bytes, useful_blocks);
  if (options.num_kv_blocks_override > 0) {
    if (options.num_kv_blocks_override > budget / block_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "num_kv_blocks_override ", options.num_kv_blocks_override, " does not fit: ",
          budget / block_bytes, " blocks of ", block_bytes, " bytes fit in the budget"));
    }
    num_blocks = options.num_kv_blocks_override;
  }
  if (num_blocks < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no GPU memory left for the KV cache: ", free_bytes >> 20, " MiB free of ",
                     total_bytes >> 20, " MiB after weights and scratch, gpu_memory_utilization ",
                     options.gpu_memory_utilization, "; raise it or lower max_num_batched_tokens"));
  }
  if (num_blocks > 2147483647) num_blocks = 2147483647;
  LY_RETURN_IF_ERROR(kv.Allocate(static_cast<size_t>(num_blocks * kv_block_bytes / 2)));
  // Zeroed so that a read of a never-written slot (none should happen) is finite.
  LY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(kv.get(), 0, kv.bytes(), stream));
  if (summary_block_bytes > 0) {
    LY_RETURN_IF_ERROR(
        key_summary.Allocate(static_cast<size_t>(num_blocks * summary_block_bytes / 2)));
    LY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(key_summary.get(), 0, key_summary.bytes(), stream));
  }
  LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

StepLayout CudaModelRunner::Impl::Layout(int64_t rows, int64_t chunks, int64_t tiles,
                                         int64_t width) const {
  StepLayout l;
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t offset = at;
    at = AlignUp(at + bytes, 16);
    return offset;
  };
  const size_t i32 = sizeof(int32_t);
  l.ids = take(static_cast<size_t>(rows) * i32);
  l.positions = take(static_cast<size_t>(rows) * i32);
  l.slots = take(static_cast<size_t>(rows) * i32);
  l.row_seq = take(static_cast<size_t>(rows) * i32);
  l.logit_rows = take(static_cast<size_t>(chunks) * i32);
  l.context_lens = take(static_cast<size_t>(chunks) * i32);
  l.tiles = take(static_cast<size_t>(tiles) * sizeof(cuda::PrefillTile));
  l.block_tables = take(static_cast<size_t>(chunks * width) * i32);
  l.total = at;
  return l;
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelConfig& config, const SafetensorsArchive* maybe_archive,
    const CudaModelRunnerOptions& options) {
  if (options.block_size < 1 || options.max_num_batched_tokens < 1 || options.max_num_seqs < 1) {
    return absl::InvalidArgumentError(
        "block_size, max_num_batched_tokens and max_num_seqs must be positive");
  }
  if (!(options.gpu_memory_utilization > 0.0 && options.gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("gpu_memory_utilization must be in (0, 1], got ",
                                                   options.gpu_memory_utilization));
  }
  LY_ASSIGN_OR_RETURN(std::vector<cuda::DeviceInfo> devices, cuda::ListDevices());
  if (options.device < 0 || options.device >= static_cast<int>(devices.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA device ", options.device, " does not exist (", devices.size(), " visible)"));
  }
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->options = options;
  impl->device = devices[static_cast<size_t>(options.device)];
  if (impl->device.compute_major < 9) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", options.device, " (", impl->device.name, ", sm_",
                     impl->device.compute_major, impl->device.compute_minor, ") cannot run this ",
                     cuda::CompiledArchitectures(), " build"));
  }
  LY_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->side_stream, cudaStreamNonBlocking));
  for (cudaEvent_t* e :
       {&impl->fork_event, &impl->scored_event, &impl->attended_event, &impl->side_done_event}) {
    LY_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  }

  const int64_t max_len =
      options.max_model_len > 0 ? options.max_model_len : config.max_position_embeddings;
  impl->q_dim = config.num_heads * config.head_dim;
  impl->kv_dim = config.num_kv_heads * config.head_dim;
  impl->qkv_dim = impl->q_dim + 2 * impl->kv_dim;
  impl->max_rows = options.max_num_batched_tokens;
  impl->max_chunks = std::min(options.max_num_seqs, options.max_num_batched_tokens);
  impl->max_blocks_per_seq = (max_len + options.block_size - 1) / options.block_size;
  impl->max_tiles = impl->max_rows / cuda::kPrefillTileRows + impl->max_chunks;

  cuda::DecodeAttentionShape ds;
  ds.batch = 1;
  ds.num_heads = config.num_heads;
  ds.num_kv_heads = config.num_kv_heads;
  ds.head_dim = config.head_dim;
  ds.block_size = options.block_size;
  ds.max_blocks_per_seq = impl->max_blocks_per_seq;
  ds.max_context_len = impl->max_blocks_per_seq * options.block_size;
  cuda::PrefillAttentionShape ps;
  ps.num_heads = config.num_heads;
  ps.num_kv_heads = config.num_kv_heads;
  ps.head_dim = config.head_dim;
  ps.block_size = options.block_size;
  ps.num_chunks = 1;
  ps.max_blocks_per_seq = impl->max_blocks_per_seq;
  ps.num_tiles = 1;
  impl->fast_attention = options.attention == CudaAttentionKernels::kAuto &&
                         config.sliding_window == 0 && cuda::CanImplementDecodeAttention(ds).ok() &&
                         cuda::CanImplementPrefillAttention(ps).ok();

  if (maybe_archive != nullptr) {
    LY_ASSIGN_OR_RETURN(impl->weights, CudaWeights::Load(*maybe_archive, config));
  } else {
    LY_ASSIGN_OR_RETURN(impl->weights, CudaWeights::Synthetic(config, options.synthetic_seed));
  }
  LY_ASSIGN_OR_RETURN(impl->gemm, cuda::LtGemm::Create());
  LY_RETURN_IF_ERROR(impl->AllocateScratch());
  cuda::BlockSelectShape select_shape;
  select_shape.batch = 1;
  select_shape.num_heads = config.num_heads;
  select_shape.num_kv_heads = config.num_kv_heads;
  select_shape.head_dim = config.head_dim;
  select_shape.block_size = options.block_size;
  select_shape.max_blocks_per_seq = impl->max_blocks_per_seq;
  select_shape.budget_blocks = impl->max_blocks_per_seq;
  if (options.sparse_policies && impl->fast_attention &&
      cuda::CanImplementBlockSelect(select_shape).ok()) {
    CudaSparseDecode::Sizes sizes;
    sizes.num_layers = config.num_layers;
    sizes.num_heads = config.num_heads;
    sizes.num_kv_heads = config.num_kv_heads;
    sizes.head_dim = config.head_dim;
    sizes.block_size = options.block_size;
    sizes.max_rows = impl->max_chunks;
    sizes.max_blocks_per_seq = impl->max_blocks_per_seq;
    impl->sparse = std::make_unique<CudaSparseDecode>(sizes, options.programmatic_launch,
                                                      options.lychee_hybrid_launch);
  }
  LY_RETURN_IF_ERROR(impl->SizeKvPool());
  LY_LOG_INFO(
      "cuda runner: {} (sm_{}{}), weights {:.1f} GiB bf16, KV pool {} blocks of {} tokens "
      "({:.1f} GiB), attention kernels: {}, sparse policies: {}",
      impl->device.name, impl->device.compute_major, impl->device.compute_minor,
      impl->weights->bytes() / 1073741824.0, impl->num_blocks, options.block_size,
      impl->kv.bytes() / 1073741824.0, impl->fast_attention ? "tensor-core" : "generic",
      impl->sparse != nullptr ? "quest, streaming, lychee, prhs" : "none");
  return std::unique_ptr<CudaModelRunner>(new CudaModelRunner(std::move(impl)));
}

CudaModelRunner::CudaModelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CudaModelRunner::~CudaModelRunner() {
  if (impl_ == nullptr) return;
  for (cudaStream_t s : {impl_->stream, impl_->side_stream}) {
    if (s == nullptr) continue;
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
  for (cudaEvent_t e :
       {impl_->fork_event, impl_->scored_event, impl_->attended_event, impl_->side_done_event}) {
    if (e != nullptr) cudaEventDestroy(e);
  }
}

// ---- (2) The step's inputs ---------------------------------------------------------------------

absl::Status CudaModelRunner::Impl::Upload(const SchedulerOutput& step, int64_t rows,
                                           int64_t logit_rows, int64_t* num_decodes, int64_t* width,
                                           StepLayout* layout) {
  const int64_t bs = options.block_size;
  const int64_t num_chunks = static_cast<int64_t>(step.chunks.size());
  // Leading one-token chunks go through the decode kernel (rows 0..num_decodes-1).
  int64_t nd = 0;
  while (nd < num_chunks && step.chunks[static_cast<size_t>(nd)].token_ids.size() == 1) ++nd;
  if (!fast_attention) nd = 0;
  int64_t w = 1;
  for (const ScheduledChunk& ch : step.chunks) {
    w = std::max(w, (ch.start_position + static_cast<int64_t>(ch.token_ids.size()) + bs - 1) / bs);
  }
  tiles_h.clear();
  decode_ctx_h.clear();
  int64_t row = 0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const ScheduledChunk& ch = step.chunks[static_cast<size_t>(c)];
    const int64_t n = static_cast<int64_t>(ch.token_ids.size());
    if (c < nd) {
      decode_ctx_h.push_back(static_cast<int32_t>(ch.start_position + 1));
    } else if (fast_attention) {
      cuda::AppendPrefillTiles(static_cast<int32_t>(c), static_cast<int32_t>(row),
                               static_cast<int32_t>(n), static_cast<int32_t>(ch.start_position),
                               &tiles_h);
    }
    row += n;
  }
  if (static_cast<int64_t>(tiles_h.size()) > max_tiles) {
    return absl::InternalError(absl::StrCat("step needs ", tiles_h.size(), " prefill tiles, ",
                                            "more than the ", max_tiles, " reserved"));
  }
  *layout = Layout(rows, num_chunks, static_cast<int64_t>(tiles_h.size()), w);
  uint8_t* base = step_inputs_h.get();
  auto i32 = [base](size_t offset) { return reinterpret_cast<int32_t*>(base + offset); };
  int32_t* ids = i32(layout->ids);
  int32_t* positions = i32(layout->positions);
  int32_t* slots = i32(layout->slots);
  int32_t* row_seq = i32(layout->row_seq);
  int32_t* logit_row = i32(layout->logit_rows);
  int32_t* tables = i32(layout->block_tables);
  row = 0;
  int64_t lr = 0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    const ScheduledChunk& ch = step.chunks[static_cast<size_t>(c)];
    const int64_t n = static_cast<int64_t>(ch.token_ids.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = ch.start_position + i;
      ids[row + i] = ch.token_ids[static_cast<size_t>(i)];
      positions[row + i] = static_cast<int32_t>(pos);
      slots[row + i] = static_cast<int32_t>(
          int64_t{ch.block_table[static_cast<size_t>(pos / bs)]} * bs + pos % bs);
      row_seq[row + i] = static_cast<int32_t>(c);
    }
    const int64_t needed = (ch.start_position + n + bs - 1) / bs;
    int32_t* table_row = tables + c * w;
    std::memcpy(table_row, ch.block_table.data(), static_cast<size_t>(needed) * sizeof(int32_t));
    std::fill(table_row + needed, table_row + w, 0);  // never read: past the context
    row += n;
    if (ch.needs_logits) logit_row[lr++] = static_cast<int32_t>(row - 1);
  }
  (void)logit_rows;
  std::memcpy(base + layout->context_lens, decode_ctx_h.data(),
              decode_ctx_h.size() * sizeof(int32_t));
  std::memcpy(base + layout->tiles, tiles_h.data(), tiles_h.size() * sizeof(cuda::PrefillTile));
  LY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(step_inputs_d.get(), base, layout->total, cudaMemcpyHostToDevice, stream));
  *num_decodes = nd;
  *width = w;
  return absl::OkStatus();
}

// A decode step padded to `bucket` rows in the graph layout: block-table rows of the full
// max_blocks_per_seq stride (the stride is baked into a graph), of which only the columns in use
// are uploaded. Padding rows read block 0 at position 0 and write no KV (slot -1).
absl::Status CudaModelRunner::Impl::UploadPaddedDecode(const SchedulerOutput& step, int64_t bucket,
                                                       int64_t* max_ctx, StepLayout* layout) {
  const int64_t bs = options.block_size;
  const int64_t stride = max_blocks_per_seq;
  const int64_t n = static_cast<int64_t>(step.chunks.size());
  *layout = Layout(bucket, bucket, 0, stride);
  uint8_t* base = step_inputs_h.get();
  auto i32 = [base](size_t offset) { return reinterpret_cast<int32_t*>(base + offset); };
  int32_t* ids = i32(layout->ids);
  int32_t* positions = i32(layout->positions);
  int32_t* slots = i32(layout->slots);
  int32_t* row_seq = i32(layout->row_seq);
  int32_t* logit_row = i32(layout->logit_rows);
  int32_t* context = i32(layout->context_lens);
  int32_t* tables = i32(layout->block_tables);
  int64_t columns = 1;
  *max_ctx = 1;
  for (int64_t r = 0; r < bucket; ++r) {
    row_seq[r] = static_cast<int32_t>(r);
    logit_row[r] = static_cast<int32_t>(r);
    int32_t* table_row = tables + r * stride;
    if (r >= n) {
      ids[r] = 0;
      positions[r] = 0;
      slots[r] = -1;
      context[r] = 1;
      table_row[0] = 0;
      continue;
    }
    const ScheduledChunk& ch = step.chunks[static_cast<size_t>(r)];
    const int64_t pos = ch.start_position;
    const int64_t needed = pos / bs + 1;
    ids[r] = ch.token_ids[0];
    positions[r] = static_cast<int32_t>(pos);
    slots[r] = static_cast<int32_t>(int64_t{ch.block_table[static_cast<size_t>(pos / bs)]} * bs +
                                    pos % bs);
    context[r] = static_cast<int32_t>(pos + 1);
    std::memcpy(table_row, ch.block_table.data(), static_cast<size_t>(needed) * sizeof(int32_t));
    columns = std::max(columns, needed);
    *max_ctx = std::max(*max_ctx, pos + 1);
  }
  uint8_t* inputs_d = step_inputs_d.get();
  LY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(inputs_d, base, layout->block_tables, cudaMemcpyHostToDevice, stream));
  const size_t pitch = static_cast<size_t>(stride) * sizeof(int32_t);
  LY_CUDA_RETURN_IF_ERROR(
      cudaMemcpy2DAsync(inputs_d + layout->block_tables, pitch, base + layout->block_tables, pitch,
                        static_cast<size_t>(columns) * sizeof(int32_t), static_cast<size_t>(bucket),
                        cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

// ---- (3) Layers --------------------------------------------------------------------------------

absl::Status CudaModelRunner::Impl::Attention(int64_t layer, const Forward& f,
                                              const StepLayout& layout) {
  const cuda::PagedKvBf16 cache = LayerCache(layer);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim)));
  if (!fast_attention) {
    cuda::GenericPagedAttentionParams g;
    g.q = qkv.get();
    g.q_row_stride = qkv_dim;
    g.cache = cache;
    g.block_tables = At<int32_t>(layout.block_tables);
    g.row_seq = At<int32_t>(layout.row_seq);
    g.row_position = At<int32_t>(layout.positions);
    g.out = attn.get();
    g.rows = f.rows;
    g.num_heads = config.num_heads;
    g.max_blocks_per_seq = f.width;
    g.sliding_window = config.sliding_window;
    g.scale = scale;
    return cuda::GenericPagedAttention(g, stream);
  }
  if (f.num_decodes > 0) {
    // The decode rows are the step's first rows: their q is read in place from the QKV rows.
    cuda::DecodeAttentionParams d;
    d.q = qkv.get();
    d.q_row_stride = qkv_dim;
    d.cache = cache;
    d.block_tables = At<int32_t>(layout.block_tables);
    d.context_lens = At<int32_t>(layout.context_lens);
    d.out = attn.get();
    d.workspace = decode_workspace.get();
    d.split_counters = decode_split_counters.get();
    d.shape.batch = f.num_decodes;
    d.shape.num_heads = config.num_heads;
    d.shape.num_kv_heads = config.num_kv_heads;
    d.shape.head_dim = config.head_dim;
    d.shape.block_size = options.block_size;
    d.shape.max_blocks_per_seq = f.width;
    d.shape.max_context_len = f.max_decode_ctx;
    d.scale = scale;
    d.programmatic_launch = options.programmatic_launch;
    const cuda::DecodeAttentionPlan plan =
        cuda::PlanDecodeAttention(d.shape, device.num_sms, decode_plan_options);
    if (cuda::DecodeAttentionWorkspaceBytes(d.shape, plan) > decode_workspace_bytes) {
      return absl::InternalError("decode attention plan needs more workspace than reserved");
    }
    if (!f.sparse) {
      LY_RETURN_IF_ERROR(cuda::DecodeAttention(d, plan, stream));
    } else {
      // Sparse rows: per-(sequence, kv head) tables from the selection, the LSE for the bound; an
      // audit also runs the dense attention (into scratch) for the exact dropped mass.
      cuda::DecodeAttentionParams dense = d;
      d.maybe_lse = sparse->lse();
      if (sparse->hybrid()) {
        LY_RETURN_IF_ERROR(HybridSparseAttention(layer, f, d, dense, plan));
      } else {
        // With 16-token blocks the rows that read everything (dense requests, LycheeDecode's
        // retrieval heads) attend first, over the sequences' own tables, and write their exact
        // block scores on the way: selection then ranks the retrieval heads without reading their
        // keys a second time (at 3 x 128K that second read was the largest part of lychee's
        // selection).
        const bool scores_from_attention = options.block_size == cuda::kBlockScoresBlockSize;
        if (scores_from_attention) {
          cuda::DecodeAttentionParams full = d;
          full.maybe_block_scores = sparse->scores();
          full.block_scores_row_stride = sparse->width();
          LY_RETURN_IF_ERROR(SparseDecodeAttentionPart(layer, f, full, 0, f.max_decode_ctx));
        }
        LY_RETURN_IF_ERROR(sparse->Select(layer, qkv.get(), qkv_dim, cache, d.block_tables,
                                          d.context_lens, scale, scores_from_attention, stream));
        d.block_tables = sparse->tables();
        d.per_kv_head_tables = true;
        for (int part = scores_from_attention ? 1 : 0; part < 2; ++part) {
          cuda::DecodeAttentionParams sub = d;
          sub.context_lens = sparse->split_lens(part);
          LY_RETURN_IF_ERROR(
              SparseDecodeAttentionPart(layer, f, sub, part, sparse->max_sparse_tokens()));
        }
        // max_dropped_mass: rows whose bound misses it double their budgets and run again. d's
        // tables are the selection's from here on.
        for (int64_t round = 1; round <= sparse->widening_rounds(); ++round) {
          LY_RETURN_IF_ERROR(sparse->Widen(layer, round, qkv.get(), qkv_dim, cache,
                                           dense.block_tables, dense.context_lens, scale, stream));
          cuda::DecodeAttentionParams sub = d;
          sub.context_lens = sparse->split_lens(1);
          LY_RETURN_IF_ERROR(
              SparseDecodeAttentionPart(layer, f, sub, 1, sparse->widened_tokens(round)));
        }
        LY_ASSIGN_OR_RETURN(const float* dense_lse, AuditAttention(dense, plan));
        LY_RETURN_IF_ERROR(sparse->Accumulate(dense_lse, stream));
      }
    }
  }
  if (f.num_tiles > 0) {
    cuda::PrefillAttentionParams p;
    p.q = qkv.get();
    p.q_row_stride = qkv_dim;
    p.cache = cache;
    p.block_tables = At<int32_t>(layout.block_tables);
    p.tiles = At<cuda::PrefillTile>(layout.tiles);
    p.out = attn.get();
    p.shape.num_heads = config.num_heads;
    p.shape.num_kv_heads = config.num_kv_heads;
    p.shape.head_dim = config.head_dim;
    p.shape.block_size = options.block_size;
    p.shape.num_chunks = f.num_chunks;
    p.shape.max_blocks_per_seq = f.width;
    p.shape.num_tiles = f.num_tiles;
    p.scale = scale;
    LY_RETURN_IF_ERROR(cuda::PrefillAttention(p, stream));
  }
  return absl::OkStatus();
}

absl::StatusOr<const float*> CudaModelRunner::Impl::AuditAttention(
    const cuda::DecodeAttentionParams& dense, const cuda::DecodeAttentionPlan& plan) {
  if (!sparse->audited()) return nullptr;
  cuda::DecodeAttentionParams audit = dense;
  audit.out = sparse->audit_out();
  audit.maybe_lse = sparse->dense_lse();
  LY_RETURN_IF_ERROR(cuda::DecodeAttention(audit, plan, stream));
  return sparse->dense_lse();
}

absl::Status CudaModelRunner::Impl::HybridSparseAttention(int64_t layer, const Forward& f,
                                                          const cuda::DecodeAttentionParams& d,
                                                          const cuda::DecodeAttentionParams& dense,
                                                          const cuda::DecodeAttentionPlan& plan) {
  // The layer's one attention launch on the main stream: the rows that read everything over their
  // sequences' tables (writing the retrieval heads' exact block scores), the sparse heads over
  // the sets earlier layers left in tables(). Everything else of the layer's sparse work runs on
  // the side stream, where nothing on the main stream waits for it until it must:
  //   side: the sparse heads' scoring and bounds (they read q and this layer's key summaries:
  //         forked after the KV write, and the next layer's QKV GEMM waits for `scored_event`),
  //   side: after the attention (and an audit's dense attention): the retrieval heads' top-k from
  //         its block scores, then the dropped mass of the layer (`side_done_event`: the next
  //         hybrid attention waits for it, since it reads those sets and rewrites the LSE and
  //         the scores, and so does the end of the step).
  // The events are recorded and waited inside the step, so a captured graph holds them as edges.
  if (side_pending) LY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream, side_done_event, 0));
  LY_CUDA_RETURN_IF_ERROR(cudaEventRecord(fork_event, stream));
  LY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(side_stream, fork_event, 0));
  LY_RETURN_IF_ERROR(sparse->Select(layer, qkv.get(), qkv_dim, d.cache, d.block_tables,
                                    d.context_lens, d.scale, /*exact_scores_given=*/true,
                                    side_stream, cuda::SelectRowFilter::kBudgetRows,
                                    /*programmatic_launch=*/false));
  LY_CUDA_RETURN_IF_ERROR(cudaEventRecord(scored_event, side_stream));
  side_pending = true;

  cuda::DecodeAttentionParams hybrid = d;
  hybrid.full_block_tables = d.block_tables;
  hybrid.full_context_lens = d.context_lens;
  hybrid.block_tables = sparse->tables();
  hybrid.context_lens = sparse->set_lens();
  hybrid.per_kv_head_tables = true;
  hybrid.maybe_block_scores = sparse->scores();
  hybrid.block_scores_row_stride = sparse->width();
  LY_RETURN_IF_ERROR(HybridDecodeAttention(layer, f, hybrid));
  LY_ASSIGN_OR_RETURN(const float* dense_lse, AuditAttention(dense, plan));
  LY_CUDA_RETURN_IF_ERROR(cudaEventRecord(attended_event, stream));

  LY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(side_stream, attended_event, 0));
  LY_RETURN_IF_ERROR(sparse->Select(layer, qkv.get(), qkv_dim, d.cache, d.block_tables,
                                    d.context_lens, d.scale, /*exact_scores_given=*/true,
                                    side_stream, cuda::SelectRowFilter::kReadsAllRows,
                                    /*programmatic_launch=*/false));
  LY_RETURN_IF_ERROR(sparse->Accumulate(dense_lse, side_stream, /*programmatic_launch=*/false));
  LY_CUDA_RETURN_IF_ERROR(cudaEventRecord(side_done_event, side_stream));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Impl::JoinSideStream() {
  if (!side_pending) return absl::OkStatus();
  side_pending = false;
  LY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream, side_done_event, 0));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Impl::SparseDecodeAttentionPart(int64_t layer, const Forward& f,
                                                              const cuda::DecodeAttentionParams& d,
                                                              int part, int64_t part1_tokens) {
  // A sparse step attends in two launches, each planned for its own rows: part 0, those that
  // read everything (dense requests, LycheeDecode's retrieval heads), and part 1, the
  // budget-bound rest. Planned as one batch, a few long rows among many short ones would get the
  // splits of a batch of long rows and run as a thin wave; planned alone, they are split across
  // the GPU. Each launch runs over its part's row list: its workspace and split counters are
  // indexed by position in the list.
  const int64_t rows = sparse->part_rows(layer, part);
  if (rows == 0) return absl::OkStatus();
  cuda::DecodeAttentionParams sub = d;
  if (part == 1) sub.shape.max_context_len = std::min(f.max_decode_ctx, part1_tokens);
  return AttendRowList(sub, sparse->row_list(layer, part), rows, rows, sub.shape.max_context_len);
}

absl::Status CudaModelRunner::Impl::HybridDecodeAttention(int64_t layer, const Forward& f,
                                                          const cuda::DecodeAttentionParams& d) {
  // Every row in one launch, planned for the rows that read everything (or, in a layer without
  // them, for the budget-bound rows alone): those long rows get the splits their own launch
  // would, and a budget row's tokens take a few splits of the same length.
  const int64_t full = sparse->part_rows(layer, 0);
  const int64_t budget = sparse->part_rows(layer, 1);
  const int64_t planned_tokens =
      full > 0 ? f.max_decode_ctx : std::min(f.max_decode_ctx, sparse->max_sparse_tokens());
  return AttendRowList(d, sparse->hybrid_row_list(layer), full + budget, full > 0 ? full : budget,
                       planned_tokens);
}

absl::Status CudaModelRunner::Impl::AttendRowList(const cuda::DecodeAttentionParams& d,
                                                  const int32_t* list, int64_t rows,
                                                  int64_t planned_rows, int64_t planned_tokens) {
  cuda::DecodeAttentionParams sub = d;
  sub.maybe_row_list = list;
  sub.row_list_len = rows;
  const int64_t per_split = rows * (config.num_heads / config.num_kv_heads) *
                            (config.head_dim + 1) * static_cast<int64_t>(sizeof(float));
  cuda::DecodeAttentionShape alone = sub.shape;  // the plan sees only the planned rows
  alone.batch = planned_rows;
  alone.num_kv_heads = 1;
  alone.max_context_len = planned_tokens;
  cuda::DecodeAttentionPlanOptions o = decode_plan_options;
  // The workspace was reserved for dense batches; more splits than fit would not.
  o.max_splits = static_cast<int>(std::clamp<int64_t>(
      static_cast<int64_t>(decode_workspace_bytes) / per_split, 1, o.max_splits));
  const cuda::DecodeAttentionPlan plan = cuda::PlanDecodeAttention(alone, device.num_sms, o);
  if (cuda::DecodeAttentionWorkspaceBytesForRows(sub.shape, plan, rows) > decode_workspace_bytes) {
    return absl::InternalError("sparse decode attention plan needs more workspace than reserved");
  }
  return cuda::DecodeAttention(sub, plan, stream);
}

absl::Status CudaModelRunner::Impl::Layer(int64_t layer, const Forward& f,
                                          const StepLayout& layout) {
  const int64_t rows = f.rows;
  const CudaLayerWeights& w = weights->layers()[static_cast<size_t>(layer)];
  const int64_t hidden = config.hidden_size;
  const int64_t inter = CudaPaddedIntermediate(config);
  const float eps = static_cast<float>(config.rms_norm_eps);

  // Pre-attention norm; from layer 1 on it first adds the previous MLP output to the residual.
  cuda::RmsNormParams norm;
  norm.x = layer == 0 ? resid.get() : delta.get();
  norm.maybe_residual = layer == 0 ? nullptr : resid.get();
  norm.weight = w.input_norm;
  norm.out = h.get();
  norm.rows = rows;
  norm.dim = hidden;
  norm.eps = eps;
  LY_RETURN_IF_ERROR(cuda::RmsNorm(norm, stream));

  // A hybrid step's side stream may still be scoring the previous layer's q.
  if (side_pending) LY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream, scored_event, 0));
  LY_RETURN_IF_ERROR(Gemm(h.get(), w.w_qkv, qkv.get(), rows, qkv_dim, hidden));
  if (w.b_qkv != nullptr) {
    cuda::AddBiasParams b;
    b.x = qkv.get();
    b.bias = w.b_qkv;
    b.rows = rows;
    b.dim = qkv_dim;
    LY_RETURN_IF_ERROR(cuda::AddBias(b, stream));
  }
  if (w.q_norm != nullptr) {
    cuda::RmsNormPerHeadParams qn;
    qn.x = qkv.get();
    qn.weight = w.q_norm;
    qn.tokens = rows;
    qn.heads = config.num_heads;
    qn.head_dim = config.head_dim;
    qn.row_stride = qkv_dim;
    qn.eps = eps;
    LY_RETURN_IF_ERROR(cuda::RmsNormPerHead(qn, stream));
    cuda::RmsNormPerHeadParams kn = qn;
    kn.x = qkv.get() + q_dim;
    kn.weight = w.k_norm;
    kn.heads = config.num_kv_heads;
    LY_RETURN_IF_ERROR(cuda::RmsNormPerHead(kn, stream));
  }
  cuda::RopeKvWriteParams rope;
  rope.q = qkv.get();
  rope.k = qkv.get() + q_dim;
  rope.v = qkv.get() + q_dim + kv_dim;
  rope.positions = At<int32_t>(layout.positions);
  rope.slot_mapping = At<int32_t>(layout.slots);
  rope.inv_freq = inv_freq.get();
  rope.cache = LayerCache(layer);
  rope.num_tokens = rows;
  rope.num_heads = config.num_heads;
  rope.num_kv_heads = config.num_kv_heads;
  rope.head_dim = config.head_dim;
  rope.q_row_stride = qkv_dim;
  rope.k_row_stride = qkv_dim;
  rope.v_row_stride = qkv_dim;
  // One token per chunk (a decode step): each writes a block of its own sequence alone.
  rope.tokens_in_distinct_blocks = f.rows == f.num_chunks;
  LY_RETURN_IF_ERROR(cuda::RopeKvWrite(rope, stream));

  LY_RETURN_IF_ERROR(Attention(layer, f, layout));

  LY_RETURN_IF_ERROR(Gemm(attn.get(), w.wo, delta.get(), rows, hidden, q_dim));
  if (w.bo != nullptr) {
    cuda::AddBiasParams b;
    b.x = delta.get();
    b.bias = w.bo;
    b.rows = rows;
    b.dim = hidden;
    LY_RETURN_IF_ERROR(cuda::AddBias(b, stream));
  }
  norm.x = delta.get();
  norm.maybe_residual = resid.get();
  norm.weight = w.post_attention_norm;
  LY_RETURN_IF_ERROR(cuda::RmsNorm(norm, stream));

  LY_RETURN_IF_ERROR(Gemm(h.get(), w.w_gate_up, gate_up.get(), rows, 2 * inter, hidden));
  cuda::SiluMulParams silu;
  silu.gate = gate_up.get();
  silu.up = gate_up.get() + inter;
  silu.out = act.get();
  silu.rows = rows;
  silu.dim = inter;
  silu.in_row_stride = 2 * inter;
  LY_RETURN_IF_ERROR(cuda::SiluMul(silu, stream));
  return Gemm(act.get(), w.w_down, delta.get(), rows, hidden, inter);
}

// ---- (4) Execute -------------------------------------------------------------------------------

absl::StatusOr<int64_t> CudaModelRunner::Impl::EnqueueForward(
    const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies) {
  Impl& m = *this;
  StepLimits limits;
  limits.vocab_size = m.config.vocab_size;
  limits.block_size = m.options.block_size;
  limits.num_blocks = m.num_blocks;
  limits.max_num_batched_tokens = m.max_rows;
  limits.max_logit_rows = m.max_chunks;
  StepSize size;
  LY_RETURN_IF_ERROR(CheckStep(step, limits, /*all_rows=*/false, &size));
  if (static_cast<int64_t>(step.chunks.size()) > m.max_chunks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step has ", step.chunks.size(), " chunks, more than max_num_seqs ", m.max_chunks));
  }
  for (const ScheduledChunk& ch : step.chunks) {
    if (ch.start_position + static_cast<int64_t>(ch.token_ids.size()) >
        m.max_blocks_per_seq * m.options.block_size) {
      return absl::InvalidArgumentError(absl::StrCat("seq ", ch.seq_id, " reaches position ",
                                                     ch.start_position + ch.token_ids.size(),
                                                     ", beyond max_model_len"));
    }
  }
  if (!policies.empty() && policies.size() != step.chunks.size()) {
    return absl::InvalidArgumentError(absl::StrCat("step has ", step.chunks.size(), " chunks but ",
                                                   policies.size(), " policies"));
  }
  const bool any_policy =
      std::any_of(policies.begin(), policies.end(), [](auto* p) { return p != nullptr; });
  if (any_policy && m.sparse == nullptr) {
    return absl::InvalidArgumentError(
        "sparse policies do not run on this CUDA runner (sparse_policies off, or the model's "
        "shape has no sparse kernels); use --device cpu");
  }
  m.stats.assign(step.chunks.size(), SparseChunkStats{});
  m.last_step_sparse = false;
  if (size.rows == 0) return int64_t{0};

  const bool pure_decode = std::all_of(step.chunks.begin(), step.chunks.end(), [](const auto& ch) {
    return ch.token_ids.size() == 1 && ch.needs_logits;
  });
  // Sparse steps replay graphs only with sparse_cuda_graphs (their launches also depend on the
  // step's sparse plan: CudaSparseDecode::GraphKey).
  if (m.options.cuda_graphs && pure_decode && (!any_policy || m.options.sparse_cuda_graphs)) {
    // A decode step padded to its bucket replays a captured graph (cuda_graph_cache.h).
    Impl::Forward f;
    f.rows = f.num_chunks = f.logit_rows = DecodeBatchBucket(size.rows);
    f.width = m.max_blocks_per_seq;
    if (f.rows <= m.max_chunks) {
      StepLayout layout;
      int64_t max_ctx = 1;
      LY_RETURN_IF_ERROR(m.UploadPaddedDecode(step, f.rows, &max_ctx, &layout));
      f.num_decodes = m.fast_attention ? f.rows : 0;
      f.max_decode_ctx = DecodeContextBucket(max_ctx, m.max_blocks_per_seq * m.options.block_size);
      f.sparse = any_policy && CudaSparseDecode::Wanted(policies, f.num_decodes);
      CudaGraphCache::Key key{f.rows, f.max_decode_ctx, {}};
      // A graph's selection spans the full block-table width: past the kernel's limit the step
      // runs eagerly, at its own width.
      const bool fits = !f.sparse || f.width <= cuda::kBlockSelectMaxBlocks;
      if (f.sparse && fits) {
        LY_RETURN_IF_ERROR(m.sparse->Prepare(step, policies, f.num_decodes, f.width, m.stream,
                                             /*for_graph=*/true));
        key.sparse = m.sparse->GraphKey();
      }
      if (fits && m.graphs.CanLaunch(key)) {
        LY_RETURN_IF_ERROR(
            m.graphs.Launch(key, m.stream, [&m, &f, &layout] { return m.Run(f, layout); }));
        if (f.sparse) {
          LY_RETURN_IF_ERROR(m.sparse->EnqueueStatsCopy(m.stream));
          m.last_step_sparse = true;
        }
        return size.logit_rows;  // the padding rows' logits follow and are never read
      }
      // Over the graph limit (or the selection's): this step runs eagerly below (its inputs are
      // uploaded again).
    }
  }
  Impl::Forward f;
  StepLayout layout;
  f.rows = size.rows;
  f.num_chunks = static_cast<int64_t>(step.chunks.size());
  f.logit_rows = size.logit_rows;
  LY_RETURN_IF_ERROR(m.Upload(step, size.rows, size.logit_rows, &f.num_decodes, &f.width, &layout));
  f.num_tiles = static_cast<int64_t>(m.tiles_h.size());
  for (int32_t len : m.decode_ctx_h) f.max_decode_ctx = std::max<int64_t>(f.max_decode_ctx, len);
  f.sparse = any_policy && CudaSparseDecode::Wanted(policies, f.num_decodes);
  if (f.sparse) {
    LY_RETURN_IF_ERROR(m.sparse->Prepare(step, policies, f.num_decodes, f.width, m.stream));
  }
  LY_RETURN_IF_ERROR(m.Run(f, layout));
  if (f.sparse) {
    LY_RETURN_IF_ERROR(m.sparse->EnqueueStatsCopy(m.stream));
    m.last_step_sparse = true;
  }
  return size.logit_rows;
}

absl::StatusOr<absl::Span<const float>> CudaModelRunner::Execute(
    const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies) {
  LY_ASSIGN_OR_RETURN(const int64_t logit_rows, impl_->EnqueueForward(step, policies));
  if (logit_rows == 0) {
    LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
    impl_->CollectSparseStats(step);
    return absl::Span<const float>();
  }
  absl::StatusOr<absl::Span<const float>> logits = impl_->CopyLogits(logit_rows);
  if (logits.ok()) impl_->CollectSparseStats(step);
  return logits;
}

bool CudaModelRunner::samples_on_device() const { return impl_->options.device_sampling; }

absl::StatusOr<DeviceSampledTokens> CudaModelRunner::ExecuteAndSample(
    const SchedulerOutput& step, absl::Span<const DeviceSamplingInput> rows,
    absl::Span<sparsity::Policy* const> policies) {
  Impl& m = *impl_;
  if (!m.options.device_sampling) {
    return absl::FailedPreconditionError("device sampling is off (device_sampling: false)");
  }
  const int64_t wanted = std::count_if(step.chunks.begin(), step.chunks.end(),
                                       [](const ScheduledChunk& ch) { return ch.needs_logits; });
  if (static_cast<int64_t>(rows.size()) != wanted) {
    return absl::InvalidArgumentError(absl::StrCat("ExecuteAndSample: ", rows.size(),
                                                   " sampling rows for ", wanted, " logit rows"));
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].top_logprobs < 0 || rows[r].top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat("sampling row ", r, ": top_logprobs ",
                                                     rows[r].top_logprobs, " outside [0, ",
                                                     kMaxTopLogprobs, "]"));
    }
    if (rows[r].penalty_ids.size() != rows[r].penalty_counts.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling row ", r, ": penalty ids and counts differ in length"));
    }
  }
  // Uploaded first: the copy then overlaps nothing it could race with (the previous step ended
  // with a sync) and is done when the forward pass is.
  LY_RETURN_IF_ERROR(m.UploadSampling(rows));
  LY_ASSIGN_OR_RETURN(const int64_t logit_rows, m.EnqueueForward(step, policies));
  if (logit_rows == 0) {
    LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
    m.CollectSparseStats(step);
    return DeviceSampledTokens{};
  }
  absl::StatusOr<DeviceSampledTokens> sampled = m.SampleRows(logit_rows);
  if (sampled.ok()) m.CollectSparseStats(step);
  return sampled;
}

absl::Status CudaModelRunner::Impl::EnsurePenaltyCapacity(int64_t entries) {
  if (entries <= penalty_capacity && sample_in_d.size() > 0) return absl::OkStatus();
  int64_t capacity = std::max<int64_t>(penalty_capacity, kInitialPenaltyCapacity);
  while (capacity < entries) capacity *= 2;
  if (capacity > 2147483647) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a step's penalty lists hold ", entries, " tokens, more than int32 indexes"));
  }
  SampleLayout l;
  const size_t rows_bytes =
      AlignUp(static_cast<size_t>(max_chunks) * sizeof(cuda::SamplingRow), 16);
  const size_t list_bytes = AlignUp(static_cast<size_t>(capacity) * sizeof(int32_t), 16);
  l.ids = rows_bytes;
  l.counts = rows_bytes + list_bytes;
  l.in_total = rows_bytes + 2 * list_bytes;
  const size_t per_row = AlignUp(static_cast<size_t>(max_chunks) * sizeof(int32_t), 16);
  l.logprobs = per_row;
  l.top = 2 * per_row;
  l.out_total = l.top + static_cast<size_t>(max_chunks) * cuda::kMaxTopLogprobs *
                            sizeof(cuda::TopLogprobEntry);
  if (penalty_capacity > 0) {
    LY_LOG_INFO("cuda runner: sampling penalty lists grow to {} tokens", capacity);
  }
  LY_RETURN_IF_ERROR(sample_in_d.Allocate(l.in_total));
  LY_RETURN_IF_ERROR(sample_in_h.Allocate(l.in_total));
  LY_RETURN_IF_ERROR(sample_workspace.Allocate(cuda::SampleWorkspaceBytes(capacity)));
  if (sample_out_d.size() == 0) {
    LY_RETURN_IF_ERROR(sample_out_d.Allocate(l.out_total));
    LY_RETURN_IF_ERROR(sample_out_h.Allocate(l.out_total));
  }
  penalty_capacity = capacity;
  sample_layout = l;
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Impl::UploadSampling(absl::Span<const DeviceSamplingInput> rows) {
  if (static_cast<int64_t>(rows.size()) > max_chunks) {
    return absl::InvalidArgumentError(
        absl::StrCat(rows.size(), " sampling rows, more than ", max_chunks, " (max_num_seqs)"));
  }
  int64_t entries = 0;
  for (const DeviceSamplingInput& r : rows) entries += static_cast<int64_t>(r.penalty_ids.size());
  LY_RETURN_IF_ERROR(EnsurePenaltyCapacity(entries));
  uint8_t* base = sample_in_h.get();
  int32_t* ids = reinterpret_cast<int32_t*>(base + sample_layout.ids);
  int32_t* counts = reinterpret_cast<int32_t*>(base + sample_layout.counts);
  int64_t at = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const DeviceSamplingInput& in = rows[i];
    cuda::SamplingRow r;
    r.temperature = in.params.temperature;
    r.top_p = in.params.top_p;
    r.min_p = in.params.min_p;
    r.repetition_penalty = in.params.repetition_penalty;
    r.presence_penalty = in.params.presence_penalty;
    r.frequency_penalty = in.params.frequency_penalty;
    r.top_k = in.params.top_k;
    r.top_logprobs = in.top_logprobs;
    r.want_logprob = in.top_logprobs > 0 ? 1 : 0;
    r.penalty_begin = static_cast<int32_t>(at);
    r.penalty_count = static_cast<int32_t>(in.penalty_ids.size());
    r.seed = in.seed;
    r.step = static_cast<uint64_t>(in.step);
    std::memcpy(base + i * sizeof(cuda::SamplingRow), &r, sizeof(r));
    std::copy(in.penalty_ids.begin(), in.penalty_ids.end(), ids + at);
    std::copy(in.penalty_counts.begin(), in.penalty_counts.end(), counts + at);
    at += r.penalty_count;
  }
  // Rows and ids are contiguous: one copy, and one more for the counts when there are any.
  uint8_t* dev = sample_in_d.get();
  const size_t head = entries > 0 ? sample_layout.ids + static_cast<size_t>(entries) * 4
                                  : rows.size() * sizeof(cuda::SamplingRow);
  if (head > 0) {
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev, base, head, cudaMemcpyHostToDevice, stream));
  }
  if (entries > 0) {
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev + sample_layout.counts, counts,
                                            static_cast<size_t>(entries) * sizeof(int32_t),
                                            cudaMemcpyHostToDevice, stream));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceSampledTokens> CudaModelRunner::Impl::SampleRows(int64_t logit_rows) {
  const SampleLayout& l = sample_layout;
  uint8_t* in = sample_in_d.get();
  uint8_t* out = sample_out_d.get();
  cuda::SampleParams p;
  p.logits = logits_d.get();
  p.row_params = reinterpret_cast<const cuda::SamplingRow*>(in);
  p.penalty_ids = reinterpret_cast<const int32_t*>(in + l.ids);
  p.penalty_counts = reinterpret_cast<const int32_t*>(in + l.counts);
  p.out_tokens = reinterpret_cast<int32_t*>(out);
  p.out_logprobs = reinterpret_cast<float*>(out + l.logprobs);
  p.out_top = reinterpret_cast<cuda::TopLogprobEntry*>(out + l.top);
  p.workspace = sample_workspace.get();
  p.workspace_bytes = sample_workspace.bytes();
  p.rows = logit_rows;
  p.vocab = config.vocab_size;
  p.penalty_capacity = penalty_capacity;
  LY_RETURN_IF_ERROR(cuda::Sample(p, stream));
  const size_t top_count = static_cast<size_t>(logit_rows) * cuda::kMaxTopLogprobs;
  const size_t bytes = l.top + top_count * sizeof(cuda::TopLogprobEntry);
  LY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(sample_out_h.get(), out, bytes, cudaMemcpyDeviceToHost, stream));
  LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  const uint8_t* host = sample_out_h.get();
  for (size_t i = 0; i < top_count; ++i) {
    cuda::TopLogprobEntry e;
    std::memcpy(&e, host + l.top + i * sizeof(e), sizeof(e));
    top_h[i] = TokenLogprob{e.token, e.logprob};
  }
  DeviceSampledTokens result;
  const size_t rows = static_cast<size_t>(logit_rows);
  result.tokens = absl::Span<const int32_t>(reinterpret_cast<const int32_t*>(host), rows);
  result.logprobs =
      absl::Span<const float>(reinterpret_cast<const float*>(host + l.logprobs), rows);
  result.top = absl::Span<const TokenLogprob>(top_h.data(), top_count);
  return result;
}

absl::StatusOr<absl::Span<const float>> CudaModelRunner::Impl::CopyLogits(int64_t logit_rows) {
  const size_t count = static_cast<size_t>(logit_rows * config.vocab_size);
  LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits_h.get(), logits_d.get(), count * sizeof(float),
                                          cudaMemcpyDeviceToHost, stream));
  LY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::Span<const float>(logits_h.get(), count);
}

// Everything a step enqueues after its inputs are on the device; only enqueues (no sync), so a
// decode step can be captured into a graph.
absl::Status CudaModelRunner::Impl::Run(const Forward& f, const StepLayout& layout) {
  side_pending = false;
  const absl::Status forward = RunForward(f, layout);
  // Joined even after an error: the next step's uploads must not race the side stream.
  const absl::Status joined = JoinSideStream();
  return forward.ok() ? joined : forward;
}

absl::Status CudaModelRunner::Impl::RunForward(const Forward& f, const StepLayout& layout) {
  const int64_t hidden = config.hidden_size;
  cuda::EmbeddingGatherParams embed;
  embed.table = weights->embed_tokens();
  embed.ids = At<int32_t>(layout.ids);
  embed.out = resid.get();
  embed.tokens = f.rows;
  embed.vocab = config.vocab_size;
  embed.hidden = hidden;
  LY_RETURN_IF_ERROR(cuda::EmbeddingGather(embed, stream));
  for (int64_t l = 0; l < config.num_layers; ++l) LY_RETURN_IF_ERROR(Layer(l, f, layout));
  // (A hybrid step's last selection runs beside the final norm and the LM head: Run joins it.)
  if (f.logit_rows == 0) return absl::OkStatus();
  // Final norm (with the last MLP's residual add) over every row, then the wanted rows only.
  cuda::RmsNormParams norm;
  norm.x = delta.get();
  norm.maybe_residual = resid.get();
  norm.weight = weights->final_norm();
  norm.out = h.get();
  norm.rows = f.rows;
  norm.dim = hidden;
  norm.eps = static_cast<float>(config.rms_norm_eps);
  LY_RETURN_IF_ERROR(cuda::RmsNorm(norm, stream));
  cuda::EmbeddingGatherParams gather;  // a row gather: "table" = the normed rows
  gather.table = h.get();
  gather.ids = At<int32_t>(layout.logit_rows);
  gather.out = logit_hidden.get();
  gather.tokens = f.logit_rows;
  gather.vocab = f.rows;
  gather.hidden = hidden;
  LY_RETURN_IF_ERROR(cuda::EmbeddingGather(gather, stream));
  return Gemm(logit_hidden.get(), weights->lm_head(), logits_d.get(), f.logit_rows,
              config.vocab_size, hidden, cuda::GemmOutType::kFp32);
}

absl::Span<const SparseChunkStats> CudaModelRunner::sparse_stats() const { return impl_->stats; }

absl::Status CudaModelRunner::SupportsPolicy(const PolicySpec& spec) const {
  if (spec.name.empty() || spec.name == "dense") return absl::OkStatus();
  if (impl_->sparse == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy: '", spec.name, "' does not run on this CUDA runner (",
        impl_->options.sparse_policies ? "the model's attention shape has no sparse kernels"
                                       : "sparse_policies is off",
        "); start the server with --device cpu for sparse policies"));
  }
  return CudaSparsePolicySupport(spec, impl_->options.block_size);
}
const ModelConfig& CudaModelRunner::config() const { return impl_->config; }
const CudaModelRunnerOptions& CudaModelRunner::options() const { return impl_->options; }
int64_t CudaModelRunner::num_kv_blocks() const { return impl_->num_blocks; }
int64_t CudaModelRunner::kv_cache_bytes() const { return static_cast<int64_t>(impl_->kv.bytes()); }
int64_t CudaModelRunner::weight_bytes() const {
  return static_cast<int64_t>(impl_->weights->bytes());
}
std::string CudaModelRunner::device_name() const { return impl_->device.name; }
size_t CudaModelRunner::num_cuda_graphs() const { return impl_->graphs.num_graphs(); }
int64_t CudaModelRunner::num_graph_replays() const { return impl_->graphs.num_replays(); }
void CudaModelRunner::set_cuda_graphs(bool enabled) { impl_->options.cuda_graphs = enabled; }
void CudaModelRunner::set_sparse_cuda_graphs(bool enabled) {
  impl_->options.sparse_cuda_graphs = enabled;
}

void CudaModelRunner::set_lychee_hybrid_launch(bool enabled) {
  impl_->options.lychee_hybrid_launch = enabled;
  if (impl_->sparse != nullptr) impl_->sparse->set_hybrid_launch(enabled);
}

}  // namespace lychee
