// SPDX-License-Identifier: Apache-2.0
// tokenizer.json "model" of type BPE: vocabulary, ranked merges, byte fallback, unk handling.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

class BpeModel {
 public:
  // Parses a tokenizer.json "model" object. Merges may be "a b" strings or ["a", "b"] pairs.
  // May throw nlohmann::json::exception on malformed JSON.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece to `out`.
  void Tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Vocabulary string of `id`, or nullptr when `id` is not in the model's vocabulary.
  const std::string* IdToToken(int32_t id) const;
  std::optional<int32_t> unk_id() const { return unk_id_; }
  // One past the largest id of the model's vocabulary.
  int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // Ids of "<0x00>".."<0xFF>" when byte_fallback; -1 when absent.
};

}  // namespace lychee::tokenizer_internal
