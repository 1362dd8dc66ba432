// SPDX-License-Identifier: Apache-2.0
// SentencePiece BPE encoding (see the header): load-time checks, normalization, merges.
#include "model/tokenizer/spm_processor.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/file.h"
#include "common/status.h"

namespace lychee::tokenizer_internal {
namespace {

// The byte value of a "<0xXX>" piece, -1 when `piece` has another shape.
int PieceToByte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpmProcessor>> SpmProcessor::Load(const std::string& path) {
  LY_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  return FromSerialized(bytes);
}

absl::StatusOr<std::unique_ptr<SpmProcessor>> SpmProcessor::FromSerialized(std::string_view bytes) {
  LY_ASSIGN_OR_RETURN(SpmModelProto model, ParseSpmModelProto(bytes));
  auto processor = std::unique_ptr<SpmProcessor>(new SpmProcessor(std::move(model)));
  LY_RETURN_IF_ERROR(processor->Init());
  return processor;
}

absl::Status SpmProcessor::Init() {
  if (model_.model_type != SpmModelProto::kBpe) {
    return absl::UnimplementedError(fmt::format("model_type {} is not supported (BPE only)",
                                                SpmModelTypeName(model_.model_type)));
  }
  // A non-empty precompiled_charsmap holds a compiled normalization rule (nmt_nfkc, ...), which
  // we do not implement; "identity" (Llama 2, Mistral) leaves it empty.
  if (!model_.precompiled_charsmap.empty()) {
    return absl::UnimplementedError(fmt::format(
        "normalizer '{}' (a precompiled_charsmap) is not supported", model_.normalizer_name));
  }
  if (model_.treat_whitespace_as_suffix) {
    return absl::UnimplementedError("treat_whitespace_as_suffix is not supported");
  }
  if (model_.pieces.empty()) return absl::InvalidArgumentError("the model has no pieces");
  byte_ids_.fill(-1);
  for (int id = 0; id < size(); ++id) {
    const SpmModelProto::Piece& piece = model_.pieces[id];
    if (piece.type < SpmModelProto::kNormal || piece.type > SpmModelProto::kByte) {
      return absl::InvalidArgumentError(fmt::format("piece {} has type {}", id, piece.type));
    }
    if (piece.piece.empty())
      return absl::InvalidArgumentError(fmt::format("piece {} is empty", id));
    if (!ids_.emplace(piece.piece, id).second) {
      return absl::InvalidArgumentError(fmt::format("piece '{}' is defined twice", piece.piece));
    }
    switch (piece.type) {
      case SpmModelProto::kUnknown:
        if (unknown_id_ >= 0) return absl::InvalidArgumentError("more than one unknown piece");
        unknown_id_ = id;
        break;
      case SpmModelProto::kUserDefined:
        user_defined_.push_back(piece.piece);
        break;
      case SpmModelProto::kByte: {
        const int byte = PieceToByte(piece.piece);
        if (!model_.byte_fallback || byte < 0) {
          return absl::InvalidArgumentError(fmt::format(
              "byte piece '{}' needs the form <0xXX> and byte_fallback on", piece.piece));
        }
        byte_ids_[byte] = id;
        break;
      }
      default:
        break;
    }
  }
  if (unknown_id_ < 0) return absl::InvalidArgumentError("the model has no unknown piece");
  std::stable_sort(user_defined_.begin(), user_defined_.end(),
                   [](std::string_view a, std::string_view b) { return a.size() > b.size(); });
  const auto control_or_none = [this](const std::string& piece) {
    const int id = IdOrUnk(piece);
    return IsControl(id) ? id : -1;
  };
  bos_id_ = control_or_none(model_.bos_piece);
  eos_id_ = control_or_none(model_.eos_piece);
  pad_id_ = control_or_none(model_.pad_piece);
  unk_id_ = IsUnknown(IdOrUnk(model_.unk_piece)) ? IdOrUnk(model_.unk_piece) : -1;
  return absl::OkStatus();
}

std::string SpmProcessor::IdToPiece(int id) const {
  if (id < 0 || id >= size()) return std::string();
  return model_.pieces[id].piece;
}

int SpmProcessor::PieceToId(std::string_view piece) const {
  const auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

int SpmProcessor::IdOrUnk(std::string_view piece) const {
  const int id = PieceToId(piece);
  return id >= 0 ? id : unknown_id_;
}

size_t SpmProcessor::MatchUserDefined(std::string_view text) const {
  for (std::string_view symbol : user_defined_) {
    if (text.substr(0, symbol.size()) == symbol) return symbol.size();
  }
  return 0;
}

std::vector<int> SpmProcessor::Encode(std::string_view text) const {
  const std::string normalized = Normalize(text);
  std::vector<int> ids;
  bool prev_unknown = false;
  for (std::string_view piece : Segment(normalized)) {
    const int id = IdOrUnk(piece);
    const bool unknown = IsUnknown(id);
    // Without byte fallback the library fuses a run of unknown pieces into one.
    if (unknown && prev_unknown && !model_.byte_fallback) continue;
    prev_unknown = unknown;
    if (!unknown || !model_.byte_fallback) {
      ids.push_back(id);
      continue;
    }
    // Byte fallback: an out-of-vocabulary piece becomes its UTF-8 bytes.
    for (char c : piece) {
      const int byte_id = byte_ids_[static_cast<uint8_t>(c)];
      ids.push_back(byte_id >= 0 ? byte_id : unknown_id_);
    }
  }
  return ids;
}

}  // namespace lychee::tokenizer_internal
