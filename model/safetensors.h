// SPDX-License-Identifier: Apache-2.0
// Safetensors checkpoints: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Files are memory-mapped; tensors are views into the maps.
//
// Every malformed input is an error value naming the file and tensor (truncated file, bad header
// JSON, unknown dtype, data offsets out of range, tensor missing, shape mismatch); never a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/file.h"

namespace lychee {

enum class DType { kF32, kF16, kBF16, kI32, kI64 };

std::string_view DTypeName(DType dtype);  // safetensors spelling: "F32", "BF16", ...
size_t DTypeSize(DType dtype);

// IEEE half / bfloat16 bits → fp32, exact (subnormals, ±inf and NaN payloads preserved).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

struct TensorView {
  std::string name;
  std::string file;  // which shard holds it (for error messages)
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into a MappedFile owned by the archive
  size_t nbytes = 0;
  int64_t NumElements() const;
};

class SafetensorsArchive {
 public:
  // `path` is a .safetensors file, a .safetensors.index.json file, or a directory holding
  // model.safetensors.index.json or model.safetensors.
  static absl::StatusOr<SafetensorsArchive> Open(const std::string& path);
  // One safetensors file already in memory (`name` names it in errors). The tensors are views
  // into `bytes`, which must outlive the archive (the fuzz target's entry point).
  static absl::StatusOr<SafetensorsArchive> FromBuffer(const std::string& name,
                                                       std::string_view bytes);

  bool Contains(const std::string& name) const;
  absl::StatusOr<const TensorView*> Find(const std::string& name) const;
  std::vector<std::string> Names() const;

  // Converts a tensor to fp32 (from F32/F16/BF16). When `expected_shape` is non-empty the tensor's
  // shape must equal it (InvalidArgument naming file, tensor, both shapes).
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name,
                                             absl::Span<const int64_t> expected_shape = {}) const;
  // Integer tensors (I32/I64) as int64 values; used by golden files that store token ids.
  absl::StatusOr<std::vector<int64_t>> ReadI64(const std::string& name) const;

 private:
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
};

}  // namespace lychee
