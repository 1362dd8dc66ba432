// SPDX-License-Identifier: Apache-2.0
// CpuModelRunner: step validation, the layer loop over a batch of rows (GEMMs over all rows,
// paged K/V writes and attention per chunk), and the LM head over the rows whose logits are
// wanted.
#include "engine/cpu_model_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "engine/cpu_packed_weights.h"
#include "engine/step_check.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_runtime.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/paged_kv.h"
#include "kernels/cpu/sparse_attention.h"

namespace lychee {

KvCacheShape KvCacheShapeFor(const ModelConfig& config, int64_t block_size) {
  KvCacheShape shape;
  shape.num_layers = config.num_layers;
  shape.num_kv_heads = config.num_kv_heads;
  shape.head_dim = config.head_dim;
  shape.block_size = block_size;
  return shape;
}

struct CpuModelRunner::Impl {
  ModelConfig config;
  CpuModelRunnerOptions options;
  KvPool* pool = nullptr;
  PackedWeights w;
  int64_t max_logit_rows = 0;

  // Scratch for max_num_batched_tokens rows (T), allocated once in Create.
  std::vector<float> x;            // [T, hidden] residual stream
  std::vector<float> h;            // [T, max(hidden, q_dim)] normed input / projection output
  std::vector<float> qkv;          // [T, q_dim + 2 * kv_dim]; K/V normed and rotated in place
  std::vector<float> q;            // [T, q_dim] contiguous queries (PagedAttention's layout)
  std::vector<float> attn;         // [T, q_dim]
  std::vector<float> gate_up;      // [T, 2 * intermediate]
  std::vector<float> act;          // [T, intermediate]
  std::vector<int64_t> positions;  // [T]
  std::vector<float> scores;       // [pool positions]: one query's attention scores
  std::vector<float> flash;        // FlashAttention's workspace (cpu::NumThreads() at Create)
  std::vector<float> logits;       // [max_logit_rows, vocab]
  // Sparse decode (engine thread; sized at Create, the selection grows with the context).
  std::vector<SparseChunkStats> stats;  // [chunks of the step]
  std::vector<float> head_mass;         // [num_heads] one layer's bounds
  std::vector<double> exact;            // [num_heads] audits: exact dropped mass
  std::vector<float> kv_worst;          // [num_kv_heads] worst bound of the group's heads
  std::vector<int64_t> budgets;         // [num_kv_heads] token budgets (widened per head)
  std::vector<uint8_t> head_mask;       // [num_kv_heads] heads the kernel (re)computes
  sparsity::Selection selection;
#ifndef NDEBUG
  sparsity::Selection previous;  // the last round's selection (checks of widening)
#endif

  absl::Status Validate(const SchedulerOutput& step, bool all_rows, int64_t* num_rows,
                        int64_t* num_logit_rows) const;
  void EmbedAndPositions(const SchedulerOutput& step);
  void Layer(const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies,
             int64_t layer, int64_t n);
  // One decode chunk's attention at one layer through `policy`, accumulating into `st`.
  void SparseDecode(sparsity::Policy& policy, const ScheduledChunk& ch, const PagedKvView& view,
                    int64_t layer, const float* q_row, float* out_row, SparseChunkStats* st);
  absl::Status Run(const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies,
                   bool all_rows, float* maybe_all_logits, int64_t all_logits_size,
                   absl::Span<const float>* logits_out);
};

absl::Status CpuModelRunner::Impl::Validate(const SchedulerOutput& step, bool all_rows,
                                            int64_t* num_rows, int64_t* num_logit_rows) const {
  StepLimits limits;
  limits.vocab_size = config.vocab_size;
  limits.block_size = pool->shape().block_size;
  limits.num_blocks = pool->num_blocks();
  limits.max_num_batched_tokens = options.max_num_batched_tokens;
  limits.max_logit_rows = max_logit_rows;
  StepSize size;
  LY_RETURN_IF_ERROR(CheckStep(step, limits, all_rows, &size));
  *num_rows = size.rows;
  *num_logit_rows = size.logit_rows;
  return absl::OkStatus();
}

void CpuModelRunner::Impl::EmbedAndPositions(const SchedulerOutput& step) {
  const int64_t hidden = config.hidden_size;
  int64_t row = 0;
  for (const ScheduledChunk& ch : step.chunks) {
    const int64_t n = static_cast<int64_t>(ch.token_ids.size());
    cpu::EmbeddingGather(w.embed_tokens.data(), ch.token_ids.data(), x.data() + row * hidden, n,
                         hidden);
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(row + i)] = ch.start_position + i;
    row += n;
  }
}

void CpuModelRunner::Impl::SparseDecode(sparsity::Policy& policy, const ScheduledChunk& ch,
                                        const PagedKvView& view, int64_t layer, const float* q_row,
                                        float* out_row, SparseChunkStats* st) {
  sparsity::DecodeQuery query;
  query.q = q_row;
  query.cache = view;
  query.block_table = ch.block_table;
  query.position = ch.start_position;
  query.num_heads = config.num_heads;
  query.layer = layer;
  query.num_layers = config.num_layers;
  query.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim)));
  const int64_t kv_heads = view.num_kv_heads;
  const int64_t group = config.num_heads / kv_heads;
  const int64_t bs = view.block_size;
  const int64_t pos = ch.start_position;
  const int64_t all_tokens = query.num_blocks() * bs;
  const double max_mass = policy.limits().max_dropped_mass;
  // max_dropped_mass 0 cannot be certified short of reading everything (something skipped is
  // never certified as exactly 0), so it reads every block from the start.
  budgets.assign(static_cast<size_t>(kv_heads),
                 max_mass <= 0.0 ? all_tokens : policy.limits().budget_tokens);
  head_mask.assign(static_cast<size_t>(kv_heads), 1);

  cpu::SparseDecodeAttentionParams sp;
  sp.q = q_row;
  sp.cache = view;
  sp.block_table = ch.block_table.data();
  sp.out = out_row;
  sp.dropped_mass = head_mass.data();
  sp.scratch = scores.data();
  sp.num_heads = config.num_heads;
  sp.num_table_blocks = static_cast<int64_t>(ch.block_table.size());
  sp.position = pos;
  sp.scale = query.scale;
  sp.kv_head_mask = head_mask.data();
#ifndef NDEBUG
  bool first_round = true;
#endif
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    policy.Select(query, budgets, &selection);
    st->selection_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sp.selected = selection.blocks.data();
    sp.selected_offsets = selection.offsets.data();
    sp.token_level = selection.token_level;
#ifndef NDEBUG
    LY_CHECK(static_cast<int64_t>(selection.offsets.size()) == kv_heads + 1)
        << policy.name() << ": selection has " << selection.offsets.size() - 1 << " kv heads";
    const std::string error = cpu::SelectionError(sp);
    LY_CHECK(error.empty()) << policy.name() << " layer " << layer << ": " << error;
    if (!first_round) {
      // Heads whose budget did not change are not recomputed: their selection must not either.
      for (int64_t g = 0; g < kv_heads; ++g) {
        if (head_mask[static_cast<size_t>(g)] != 0) continue;
        const auto a = selection.offsets[static_cast<size_t>(g)];
        const auto b = selection.offsets[static_cast<size_t>(g + 1)];
        const auto pa = previous.offsets[static_cast<size_t>(g)];
        const auto pb = previous.offsets[static_cast<size_t>(g + 1)];
        LY_CHECK(b - a == pb - pa &&
                 std::equal(selection.blocks.begin() + a, selection.blocks.begin() + b,
                            previous.blocks.begin() + pa))
            << policy.name() << ": an unchanged budget changed kv head " << g << "'s selection";
      }
    }
    previous = selection;
    first_round = false;
#endif
    cpu::SparseDecodeAttention(sp);
    // Per kv head, the worst bound of its query heads; widen (double) only the heads that miss
    // max_dropped_mass and do not read everything yet, and redo only those.
    bool again = false;
    for (int64_t g = 0; g < kv_heads; ++g) {
      const size_t gi = static_cast<size_t>(g);
      if (head_mask[gi] != 0) {
        kv_worst[gi] =
            *std::max_element(head_mass.begin() + g * group, head_mass.begin() + (g + 1) * group);
      }
      const bool widen = kv_worst[gi] > max_mass && budgets[gi] < all_tokens;
      head_mask[gi] = widen ? 1 : 0;
      if (!widen) continue;
      budgets[gi] = std::min(all_tokens, 2 * budgets[gi]);
      ++st->widenings;
      again = true;
    }
    if (!again) break;
  }
  policy.AfterAttention(query, head_mass);

  // Statistics of the selection the kernel last read for each kv head.
  for (int64_t g = 0; g < kv_heads; ++g) {
    const size_t gi = static_cast<size_t>(g);
    const int64_t begin = selection.offsets[gi], end = selection.offsets[gi + 1];
    int64_t read = end - begin;
    if (!selection.token_level) {
      read = 0;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = selection.blocks[static_cast<size_t>(i)];
        read += std::min(bs, pos + 1 - b * bs);
      }
    }
    st->kv_tokens_read += read;
    st->max_bound = std::max(st->max_bound, kv_worst[gi]);
    st->sum_bound += kv_worst[gi];
    ++st->heads;
  }
  st->kv_tokens_dense += kv_heads * (pos + 1);
  if (ch.audit) {
    cpu::ExactDroppedMass(sp, exact.data());
    for (const double e : exact) st->exact_max = std::max(st->exact_max, static_cast<float>(e));
  }
}

// One decoder layer over the step's `n` rows.
void CpuModelRunner::Impl::Layer(const SchedulerOutput& step,
                                 absl::Span<sparsity::Policy* const> policies, int64_t layer,
                                 int64_t n) {
  const ModelConfig& c = config;
  const PackedLayer& lw = w.layers[static_cast<size_t>(layer)];
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t q_dim = w.q_dim;
  const int64_t kv_dim = w.kv_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Attention block: projections over all rows at once.
  cpu::RmsNorm(x.data(), lw.input_norm.data(), h.data(), n, hidden, eps);
  cpu::Gemm(h.data(), lw.w_qkv.data(), lw.b_qkv.empty() ? nullptr : lw.b_qkv.data(), qkv.data(), n,
            qkv_dim, hidden);
  float* k_rows = qkv.data() + q_dim;  // row stride qkv_dim
  for (int64_t t = 0; t < n; ++t) {
    const float* row = qkv.data() + t * qkv_dim;
    std::copy(row, row + q_dim, q.data() + t * q_dim);
  }
  if (!lw.q_norm.empty()) {
    cpu::RmsNormPerHead(q.data(), lw.q_norm.data(), n, c.num_heads, c.head_dim, eps);
    for (int64_t t = 0; t < n; ++t) {
      cpu::RmsNormPerHead(k_rows + t * qkv_dim, lw.k_norm.data(), 1, c.num_kv_heads, c.head_dim,
                          eps);
    }
  }
  cpu::ApplyRope(q.data(), n, c.num_heads, c.head_dim, q_dim, positions.data(), w.inv_freq.data());
  cpu::ApplyRope(k_rows, n, c.num_kv_heads, c.head_dim, qkv_dim, positions.data(),
                 w.inv_freq.data());

  // Per chunk: K/V into the chunk's blocks, then its queries over its sequence. Every chunk's
  // K/V is written before any attention reads, so the order of chunks never matters.
  const PagedKvView view = pool->View(layer);
  int64_t row = 0;
  for (const ScheduledChunk& ch : step.chunks) {
    cpu::WritePagedKvParams wp;
    wp.cache = view;
    wp.k = k_rows + row * qkv_dim;
    wp.v = k_rows + row * qkv_dim + kv_dim;
    wp.block_table = ch.block_table.data();
    wp.num_tokens = static_cast<int64_t>(ch.token_ids.size());
    wp.num_table_blocks = static_cast<int64_t>(ch.block_table.size());
    wp.start_position = ch.start_position;
    wp.k_row_stride = qkv_dim;
    wp.v_row_stride = qkv_dim;
    cpu::WritePagedKv(wp);
    row += wp.num_tokens;
  }
  cpu::PagedAttentionParams ap;
  ap.cache = view;
  ap.scratch = scores.data();
  ap.num_heads = c.num_heads;
  ap.sliding_window = c.sliding_window;
  ap.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  row = 0;
  for (size_t ci = 0; ci < step.chunks.size(); ++ci) {
    const ScheduledChunk& ch = step.chunks[ci];
    sparsity::Policy* policy = policies.empty() ? nullptr : policies[ci];
    if (policy != nullptr && ch.is_decode && c.sliding_window == 0) {
      SparseChunkStats& st = stats[ci];
      if (layer == 0) st.max_bound = 0.0f;  // a sparse chunk: bounds are >= 0 from here on
      SparseDecode(*policy, ch, view, layer, q.data() + row * q_dim, attn.data() + row * q_dim,
                   &st);
      row += 1;
      continue;
    }
    ap.q = q.data() + row * q_dim;
    ap.out = attn.data() + row * q_dim;
    ap.block_table = ch.block_table.data();
    ap.num_queries = static_cast<int64_t>(ch.token_ids.size());
    ap.num_table_blocks = static_cast<int64_t>(ch.block_table.size());
    ap.query_start = ch.start_position;
    if (options.reference_attention) {
      cpu::PagedAttention(ap);
    } else {
      cpu::FlashAttentionParams fp;
      fp.q = ap.q;
      fp.cache = view;
      fp.block_table = ap.block_table;
      fp.out = ap.out;
      fp.workspace = flash.data();
      fp.workspace_floats = static_cast<int64_t>(flash.size());
      fp.num_queries = ap.num_queries;
      fp.num_heads = ap.num_heads;
      fp.num_table_blocks = ap.num_table_blocks;
      fp.query_start = ap.query_start;
      fp.sliding_window = ap.sliding_window;
      fp.scale = ap.scale;
      cpu::FlashAttention(fp);
    }
    row += ap.num_queries;
  }
  cpu::Gemm(attn.data(), lw.wo.data(), lw.bo.empty() ? nullptr : lw.bo.data(), h.data(), n, hidden,
            q_dim);
  cpu::AddInPlace(x.data(), h.data(), n * hidden);

  // MLP block (SwiGLU) over all rows.
  cpu::RmsNorm(x.data(), lw.post_attention_norm.data(), h.data(), n, hidden, eps);
  cpu::Gemm(h.data(), lw.w_gate_up.data(), nullptr, gate_up.data(), n, 2 * inter, hidden);
  for (int64_t t = 0; t < n; ++t) {
    const float* gu = gate_up.data() + t * 2 * inter;
    cpu::SiluMul(gu, gu + inter, act.data() + t * inter, inter);
  }
  cpu::Gemm(act.data(), lw.w_down.data(), nullptr, h.data(), n, hidden, inter);
  cpu::AddInPlace(x.data(), h.data(), n * hidden);
}

absl::Status CpuModelRunner::Impl::Run(const SchedulerOutput& step,
                                       absl::Span<sparsity::Policy* const> policies, bool all_rows,
                                       float* maybe_all_logits, int64_t all_logits_size,
                                       absl::Span<const float>* logits_out) {
  int64_t n = 0, logit_rows = 0;
  LY_RETURN_IF_ERROR(Validate(step, all_rows, &n, &logit_rows));
  if (!policies.empty() && policies.size() != step.chunks.size()) {
    return absl::InvalidArgumentError(absl::StrCat("step has ", step.chunks.size(), " chunks but ",
                                                   policies.size(), " policies"));
  }
  // Chunks never exceed rows (each has a token), so this assign never reallocates. Defaults
  // (max_bound -1) mark a chunk that ran dense.
  stats.assign(step.chunks.size(), SparseChunkStats{});
  const int64_t hidden = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  if (all_rows && all_logits_size < n * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logits buffer holds ", all_logits_size,
                                                   " floats, the step needs ", n * vocab));
  }
  if (n == 0) {
    *logits_out = {};
    return absl::OkStatus();
  }

  EmbedAndPositions(step);
  for (int64_t l = 0; l < config.num_layers; ++l) Layer(step, policies, l, n);

  // Final norm and LM head only over the rows whose logits are wanted (gathered into h).
  float* out = all_rows ? maybe_all_logits : logits.data();
  if (all_rows) {
    cpu::RmsNorm(x.data(), w.final_norm.data(), h.data(), n, hidden,
                 static_cast<float>(config.rms_norm_eps));
  } else {
    int64_t r = 0, row = 0;
    for (const ScheduledChunk& ch : step.chunks) {
      row += static_cast<int64_t>(ch.token_ids.size());
      if (!ch.needs_logits) continue;
      cpu::RmsNorm(x.data() + (row - 1) * hidden, w.final_norm.data(), h.data() + r * hidden, 1,
                   hidden, static_cast<float>(config.rms_norm_eps));
      ++r;
    }
  }
  if (logit_rows > 0) {
    cpu::Gemm(h.data(), w.LmHead(), nullptr, out, logit_rows, vocab, hidden);
  }
  *logits_out = absl::MakeConstSpan(out, static_cast<size_t>(logit_rows * vocab));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Create(
    const ModelConfig& config, ModelWeights weights, KvPool* pool,
    const CpuModelRunnerOptions& options) {
  if (pool == nullptr) return absl::InvalidArgumentError("CpuModelRunner needs a KvPool");
  if (options.max_num_batched_tokens <= 0 || options.max_num_seqs <= 0) {
    return absl::InvalidArgumentError("max_num_batched_tokens and max_num_seqs must be > 0");
  }
  const KvCacheShape& ps = pool->shape();
  if (ps.num_layers != config.num_layers || ps.num_kv_heads != config.num_kv_heads ||
      ps.head_dim != config.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV pool shape (layers ", ps.num_layers, ", kv heads ", ps.num_kv_heads,
                     ", head_dim ", ps.head_dim, ") does not match the model (", config.num_layers,
                     ", ", config.num_kv_heads, ", ", config.head_dim, ")"));
  }
  auto impl = std::make_unique<Impl>();
  LY_ASSIGN_OR_RETURN(impl->w, PackWeights(config, std::move(weights)));
  impl->config = config;
  impl->options = options;
  impl->pool = pool;
  impl->max_logit_rows = std::min(options.max_num_seqs, options.max_num_batched_tokens);

  const int64_t t = options.max_num_batched_tokens;
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const int64_t q_dim = impl->w.q_dim;
  const int64_t kv_dim = impl->w.kv_dim;
  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  impl->x.resize(size(t * hidden));
  impl->h.resize(size(t * std::max(hidden, q_dim)));
  impl->qkv.resize(size(t * (q_dim + 2 * kv_dim)));
  impl->q.resize(size(t * q_dim));
  impl->attn.resize(size(t * q_dim));
  impl->gate_up.resize(size(t * 2 * inter));
  impl->act.resize(size(t * inter));
  impl->positions.resize(size(t));
  impl->scores.resize(size(pool->num_blocks() * ps.block_size));
  impl->flash.resize(size(cpu::FlashAttentionWorkspaceFloats(config.num_heads, config.num_kv_heads,
                                                             config.head_dim, cpu::NumThreads())));
  impl->logits.resize(size(impl->max_logit_rows * config.vocab_size));
  impl->stats.reserve(size(t));
  impl->head_mass.resize(size(config.num_heads));
  impl->exact.resize(size(config.num_heads));
  impl->kv_worst.resize(size(config.num_kv_heads));
  impl->budgets.reserve(size(config.num_kv_heads));
  impl->head_mask.reserve(size(config.num_kv_heads));
  return std::unique_ptr<CpuModelRunner>(new CpuModelRunner(std::move(impl)));
}

CpuModelRunner::CpuModelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuModelRunner::~CpuModelRunner() = default;

absl::StatusOr<absl::Span<const float>> CpuModelRunner::Execute(
    const SchedulerOutput& step, absl::Span<sparsity::Policy* const> policies) {
  absl::Span<const float> logits;
  LY_RETURN_IF_ERROR(impl_->Run(step, policies, /*all_rows=*/false, nullptr, 0, &logits));
  return logits;
}

absl::Span<const SparseChunkStats> CpuModelRunner::sparse_stats() const { return impl_->stats; }

absl::Status CpuModelRunner::SupportsPolicy(const PolicySpec& /*spec*/) const {
  return absl::OkStatus();  // every policy, over fp32 and bf16 pages alike
}

absl::Status CpuModelRunner::ExecuteAllLogits(const SchedulerOutput& step,
                                              absl::Span<float> logits) {
  absl::Span<const float> unused;
  return impl_->Run(step, /*policies=*/{}, /*all_rows=*/true, logits.data(),
                    static_cast<int64_t>(logits.size()), &unused);
}

const ModelConfig& CpuModelRunner::config() const { return impl_->config; }
const CpuModelRunnerOptions& CpuModelRunner::options() const { return impl_->options; }

}  // namespace lychee
