// SPDX-License-Identifier: Apache-2.0
// Encoding with a SentencePiece tokenizer.model, implemented here rather than through
// libsentencepiece: that library carries its own protobuf, which clashes with the one gRPC uses
// in lychee-server. Matches the library's BPE model (Llama 2, Mistral) id for id: normalization
// per the model's NormalizerSpec (identity rule only), user-defined symbols kept whole, greedy
// highest-score merges, byte fallback (else unk, a run of unknowns fused into one).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer/spm_model.h"

namespace lychee::tokenizer_internal {

class SpmProcessor {
 public:
  // Loads a tokenizer.model. Parse errors do not name the path; the caller adds it.
  static absl::StatusOr<std::unique_ptr<SpmProcessor>> Load(const std::string& path);
  // From the serialized ModelProto itself.
  static absl::StatusOr<std::unique_ptr<SpmProcessor>> FromSerialized(std::string_view bytes);

  // Never fails: invalid UTF-8 bytes are encoded as U+FFFD, as the library does.
  std::vector<int> Encode(std::string_view text) const;
  int size() const { return static_cast<int>(model_.pieces.size()); }
  // "" when `id` is out of range.
  std::string IdToPiece(int id) const;
  // -1 when `piece` is not in the vocabulary.
  int PieceToId(std::string_view piece) const;
  bool IsControl(int id) const { return HasType(id, SpmModelProto::kControl); }
  bool IsUnknown(int id) const { return HasType(id, SpmModelProto::kUnknown); }
  bool IsByte(int id) const { return HasType(id, SpmModelProto::kByte); }
  bool IsUnused(int id) const { return HasType(id, SpmModelProto::kUnused); }
  // As the library answers them: the id of trainer_spec's bos/eos/pad piece when that piece is a
  // control piece (unk: the unknown piece), else -1.
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int unk_id() const { return unk_id_; }
  int pad_id() const { return pad_id_; }

 private:
  explicit SpmProcessor(SpmModelProto model) : model_(std::move(model)) {}
  SpmProcessor(const SpmProcessor&) = delete;  // ids_ points into model_.
  SpmProcessor& operator=(const SpmProcessor&) = delete;
  absl::Status Init();

  bool HasType(int id, int type) const {
    return id >= 0 && id < size() && model_.pieces[id].type == type;
  }
  // PieceToId, but unknown pieces answer unknown_id_ (the library's PieceToId).
  int IdOrUnk(std::string_view piece) const;
  // Length of the longest user-defined symbol starting `text`, 0 if none.
  size_t MatchUserDefined(std::string_view text) const;
  // The NormalizerSpec applied to `text`.
  std::string Normalize(std::string_view text) const;
  // BPE over normalized text: the final pieces, before mapping to ids.
  std::vector<std::string_view> Segment(std::string_view normalized) const;

  SpmModelProto model_;
  // Every piece → id. Views into model_.pieces, which never changes after Init.
  std::unordered_map<std::string_view, int> ids_;
  std::vector<std::string_view> user_defined_;  // Longest first.
  std::array<int, 256> byte_ids_{};             // <0xXX> pieces; -1 where absent.
  int unknown_id_ = -1;                         // The UNKNOWN piece (every model has one).
  int unk_id_ = -1;
  int bos_id_ = -1;
  int eos_id_ = -1;
  int pad_id_ = -1;
};

}  // namespace lychee::tokenizer_internal
