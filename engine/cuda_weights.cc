// SPDX-License-Identifier: Apache-2.0
// CudaWeights: a layout pass assigns every tensor its place in one allocation (fused matrices
// are adjacent pieces of one region), then each piece is filled from the checkpoint or randomly.
#include "engine/cuda_weights.h"

#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "kernels/cuda/runner_ops.h"

namespace lychee {

using bf16 = __nv_bfloat16;

struct CudaWeights::Builder {
  enum class Kind { kMatrix, kEmbedding, kNorm, kBias };
  struct Piece {
    std::string name;               // HF tensor name
    std::vector<int64_t> shape;     // as in the checkpoint: [rows, cols] or [n]
    std::vector<int64_t> reserved;  // as stored: more rows or columns for padding, else = shape
    size_t offset = 0;              // elements into storage
    Kind kind = Kind::kMatrix;
  };

  // Where the named slots live (elements into storage).
  struct Offsets {
    size_t embed = 0, final_norm = 0, lm_head = 0;
    struct Layer {
      size_t input_norm = 0, w_qkv = 0, b_qkv = 0, q_norm = 0, k_norm = 0, wo = 0, bo = 0,
             post_norm = 0, w_gate_up = 0, w_down = 0;
    };
    std::vector<Layer> layers;
  };
  static constexpr size_t kNone = ~size_t{0};

  size_t total = 0;
  std::vector<Piece> pieces;
  Offsets offsets;

  // Room for `elements`, 256-byte aligned (what cuBLASLt and 16-byte vector loads like).
  size_t Reserve(int64_t elements) {
    const size_t offset = total;
    total += (static_cast<size_t>(elements) + 127) / 128 * 128;
    return offset;
  }
  static int64_t Elements(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // `reserved` (empty: = shape) may have more rows or columns than the tensor; the rest is zero.
  size_t Add(std::string name, std::vector<int64_t> shape, Kind kind,
             std::vector<int64_t> reserved = {}) {
    if (reserved.empty()) reserved = shape;
    const size_t offset = Reserve(Elements(reserved));
    pieces.push_back({std::move(name), std::move(shape), std::move(reserved), offset, kind});
    return offset;
  }
  // One region holding the pieces one after another (fused projections), each with
  // `reserved_rows` rows (0: its own row count).
  size_t AddFused(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts, Kind kind,
                  int64_t reserved_rows = 0) {
    std::vector<std::vector<int64_t>> reserved;
    int64_t n = 0;
    for (const auto& part : parts) {
      reserved.push_back(part.second);
      if (reserved_rows > 0) reserved.back()[0] = reserved_rows;
      n += Elements(reserved.back());
    }
    const size_t offset = Reserve(n);
    size_t at = offset;
    for (size_t i = 0; i < parts.size(); ++i) {
      pieces.push_back({parts[i].first, parts[i].second, reserved[i], at, kind});
      at += static_cast<size_t>(Elements(reserved[i]));
    }
    return offset;
  }
};

namespace {

using Kind = CudaWeights::Builder::Kind;

}  // namespace

int64_t CudaPaddedIntermediate(const ModelConfig& config) {
  return (config.intermediate_size + 7) / 8 * 8;
}

namespace {

// Fills b.offsets and b.pieces with the layout of `c`.
void Layout(const ModelConfig& c, CudaWeights::Builder& b) {
  CudaWeights::Builder::Offsets& o = b.offsets;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t inter_p = CudaPaddedIntermediate(c);
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  o.embed = b.Add("model.embed_tokens.weight", {c.vocab_size, hidden}, Kind::kEmbedding);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    CudaWeights::Builder::Offsets::Layer L;
    L.b_qkv = L.q_norm = L.k_norm = L.bo = CudaWeights::Builder::kNone;
    L.input_norm = b.Add(p + "input_layernorm.weight", {hidden}, Kind::kNorm);
    L.w_qkv = b.AddFused({{p + "self_attn.q_proj.weight", {q_dim, hidden}},
                          {p + "self_attn.k_proj.weight", {kv_dim, hidden}},
                          {p + "self_attn.v_proj.weight", {kv_dim, hidden}}},
                         Kind::kMatrix);
    if (c.attention_bias) {
      L.b_qkv = b.AddFused({{p + "self_attn.q_proj.bias", {q_dim}},
                            {p + "self_attn.k_proj.bias", {kv_dim}},
                            {p + "self_attn.v_proj.bias", {kv_dim}}},
                           Kind::kBias);
    }
    if (c.qk_norm) {
      L.q_norm = b.Add(p + "self_attn.q_norm.weight", {c.head_dim}, Kind::kNorm);
      L.k_norm = b.Add(p + "self_attn.k_norm.weight", {c.head_dim}, Kind::kNorm);
    }
    L.wo = b.Add(p + "self_attn.o_proj.weight", {hidden, q_dim}, Kind::kMatrix);
    if (c.o_proj_bias) L.bo = b.Add(p + "self_attn.o_proj.bias", {hidden}, Kind::kBias);
    L.post_norm = b.Add(p + "post_attention_layernorm.weight", {hidden}, Kind::kNorm);
    L.w_gate_up = b.AddFused({{p + "mlp.gate_proj.weight", {inter, hidden}},
                              {p + "mlp.up_proj.weight", {inter, hidden}}},
                             Kind::kMatrix, inter_p);
    L.w_down = b.Add(p + "mlp.down_proj.weight", {hidden, inter}, Kind::kMatrix, {hidden, inter_p});
    o.layers.push_back(L);
  }
  o.final_norm = b.Add("model.norm.weight", {hidden}, Kind::kNorm);
  o.lm_head = c.tie_word_embeddings
                  ? o.embed
                  : b.Add("lm_head.weight", {c.vocab_size, hidden}, Kind::kMatrix);
}

absl::Status CheckSupported(const ModelConfig& c) {
  if (c.num_layers <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_heads <= 0 ||
      c.num_kv_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0) {
    return absl::InvalidArgumentError("model config has a non-positive size");
  }
  if (c.hidden_size % 8 != 0 || c.head_dim % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CUDA backend needs hidden_size and head_dim to be multiples of 8 "
                     "(16-byte rows for tensor cores); got ",
                     c.hidden_size, " and ", c.head_dim));
  }
  return absl::OkStatus();
}

// Converts a checkpoint tensor to bf16 bits in `staging` (BF16 is copied as is).
void ToBf16Bits(const TensorView& t, std::vector<uint16_t>& staging) {
  const size_t n = static_cast<size_t>(t.NumElements());
  staging.resize(n);
  switch (t.dtype) {
    case DType::kBF16:
      std::memcpy(staging.data(), t.data, n * 2);
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        staging[i] = cuda::FloatToBf16Bits(HalfToFloat(h));
      }
      break;
    default:  // kF32 (the caller rejects integer tensors)
      for (size_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, t.data + 4 * i, 4);
        staging[i] = cuda::FloatToBf16Bits(f);
      }
      break;
  }
}

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

}  // namespace

void CudaWeights::Bind(const Builder& b) {
  const bf16* base = storage_.get();
  auto at = [base](size_t offset) { return offset == Builder::kNone ? nullptr : base + offset; };
  embed_tokens_ = at(b.offsets.embed);
  final_norm_ = at(b.offsets.final_norm);
  lm_head_ = at(b.offsets.lm_head);
  layers_.clear();
  for (const Builder::Offsets::Layer& o : b.offsets.layers) {
    CudaLayerWeights L;
    L.input_norm = at(o.input_norm);
    L.w_qkv = at(o.w_qkv);
    L.b_qkv = at(o.b_qkv);
    L.q_norm = at(o.q_norm);
    L.k_norm = at(o.k_norm);
    L.wo = at(o.wo);
    L.bo = at(o.bo);
    L.post_attention_norm = at(o.post_norm);
    L.w_gate_up = at(o.w_gate_up);
    L.w_down = at(o.w_down);
    layers_.push_back(L);
  }
}

absl::StatusOr<std::unique_ptr<CudaWeights>> CudaWeights::Load(const SafetensorsArchive& archive,
                                                               const ModelConfig& config) {
  LY_RETURN_IF_ERROR(CheckSupported(config));
  Builder b;
  Layout(config, b);
  auto w = std::unique_ptr<CudaWeights>(new CudaWeights());
  LY_RETURN_IF_ERROR(w->storage_.Allocate(b.total));
  LY_CUDA_RETURN_IF_ERROR(cudaMemset(w->storage_.get(), 0, w->storage_.bytes()));  // padding
  std::vector<uint16_t> staging;
  for (const Builder::Piece& piece : b.pieces) {
    LY_ASSIGN_OR_RETURN(const TensorView* t, archive.Find(piece.name));
    if (t->shape != piece.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", piece.name, " in ", t->file, " has shape ", ShapeString(t->shape),
                       ", the config implies ", ShapeString(piece.shape)));
    }
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", piece.name, " in ", t->file, " is ",
                                                     std::string(DTypeName(t->dtype)),
                                                     "; weights must be F32, F16 or BF16"));
    }
    ToBf16Bits(*t, staging);
    // Row by row into the reserved (possibly wider) rows; one plain copy when they match.
    const size_t cols = static_cast<size_t>(piece.shape.back());
    const size_t rows = staging.size() / cols;
    const size_t pitch = static_cast<size_t>(piece.reserved.back());
    LY_CUDA_RETURN_IF_ERROR(cudaMemcpy2D(w->storage_.get() + piece.offset, pitch * 2,
                                         staging.data(), cols * 2, cols * 2, rows,
                                         cudaMemcpyHostToDevice));
  }
  w->Bind(b);
  return w;
}

absl::StatusOr<std::unique_ptr<CudaWeights>> CudaWeights::Synthetic(const ModelConfig& config,
                                                                    uint64_t seed) {
  LY_RETURN_IF_ERROR(CheckSupported(config));
  if (CudaPaddedIntermediate(config) != config.intermediate_size) {
    return absl::InvalidArgumentError("synthetic models need intermediate_size % 8 == 0");
  }
  Builder b;
  Layout(config, b);
  auto w = std::unique_ptr<CudaWeights>(new CudaWeights());
  LY_RETURN_IF_ERROR(w->storage_.Allocate(b.total));
  uint64_t piece_seed = seed;
  for (const Builder::Piece& piece : b.pieces) {
    cuda::FillUniformParams f;
    f.out = w->storage_.get() + piece.offset;
    f.count = 1;
    for (int64_t d : piece.shape) f.count *= d;
    f.seed = ++piece_seed;
    // Variance 1/in for matrices (as an initialised model), unit norms, small biases.
    float bound = 1.0f;
    switch (piece.kind) {
      case Kind::kMatrix:
        bound = static_cast<float>(std::sqrt(3.0 / static_cast<double>(piece.shape[1])));
        break;
      case Kind::kEmbedding:
        bound = std::sqrt(3.0f);
        break;
      case Kind::kNorm:
        bound = 0.0f;
        break;
      case Kind::kBias:
        bound = 0.02f;
        break;
    }
    f.lo = piece.kind == Kind::kNorm ? 1.0f : -bound;
    f.hi = piece.kind == Kind::kNorm ? 1.0f : bound;
    LY_RETURN_IF_ERROR(cuda::FillUniform(f, /*stream=*/nullptr));
  }
  LY_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  w->Bind(b);
  return w;
}

}  // namespace lychee
