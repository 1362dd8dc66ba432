// SPDX-License-Identifier: Apache-2.0
// ModelProto → SpmModelProto (field numbers in the header).
#include "model/tokenizer/spm_model.h"

#include <fmt/format.h>

#include <utility>

#include "common/status.h"
#include "model/tokenizer/protobuf_wire.h"

namespace lychee::tokenizer_internal {
namespace {

absl::Status ParsePiece(std::string_view bytes, std::string_view context,
                        SpmModelProto::Piece& piece) {
  WireReader reader(bytes, context);
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type{};
    LY_RETURN_IF_ERROR(reader.ReadKey(field, type));
    switch (field) {
      case 1: {
        std::string_view text;
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, text));
        piece.piece = std::string(text);
        break;
      }
      case 2:
        LY_RETURN_IF_ERROR(reader.ReadFloat(type, field, piece.score));
        break;
      case 3: {
        int32_t value = 0;
        LY_RETURN_IF_ERROR(reader.ReadInt32(type, field, value));
        piece.type = value;
        break;
      }
      default:
        LY_RETURN_IF_ERROR(reader.Skip(type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(std::string_view bytes, SpmModelProto& model) {
  WireReader reader(bytes, "trainer_spec");
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type{};
    LY_RETURN_IF_ERROR(reader.ReadKey(field, type));
    std::string* piece = nullptr;
    switch (field) {
      case 3: {
        int32_t value = 0;
        LY_RETURN_IF_ERROR(reader.ReadInt32(type, field, value));
        model.model_type = value;
        break;
      }
      case 24:
        LY_RETURN_IF_ERROR(reader.ReadBool(type, field, model.treat_whitespace_as_suffix));
        break;
      case 35:
        LY_RETURN_IF_ERROR(reader.ReadBool(type, field, model.byte_fallback));
        break;
      case 45:
        piece = &model.unk_piece;
        break;
      case 46:
        piece = &model.bos_piece;
        break;
      case 47:
        piece = &model.eos_piece;
        break;
      case 48:
        piece = &model.pad_piece;
        break;
      default:
        LY_RETURN_IF_ERROR(reader.Skip(type));
    }
    if (piece != nullptr) {
      std::string_view text;
      LY_RETURN_IF_ERROR(reader.ReadString(type, field, text));
      *piece = std::string(text);
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(std::string_view bytes, SpmModelProto& model) {
  WireReader reader(bytes, "normalizer_spec");
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type{};
    LY_RETURN_IF_ERROR(reader.ReadKey(field, type));
    std::string_view text;
    switch (field) {
      case 1:
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, text));
        model.normalizer_name = std::string(text);
        break;
      case 2:
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, text));
        model.precompiled_charsmap = std::string(text);
        break;
      case 3:
        LY_RETURN_IF_ERROR(reader.ReadBool(type, field, model.add_dummy_prefix));
        break;
      case 4:
        LY_RETURN_IF_ERROR(reader.ReadBool(type, field, model.remove_extra_whitespaces));
        break;
      case 5:
        LY_RETURN_IF_ERROR(reader.ReadBool(type, field, model.escape_whitespaces));
        break;
      default:
        LY_RETURN_IF_ERROR(reader.Skip(type));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SpmModelProto> ParseSpmModelProto(std::string_view bytes) {
  SpmModelProto model;
  WireReader reader(bytes, "ModelProto");
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type{};
    LY_RETURN_IF_ERROR(reader.ReadKey(field, type));
    std::string_view message;
    switch (field) {
      case 1: {
        const std::string context = fmt::format("pieces[{}]", model.pieces.size());
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, message));
        LY_RETURN_IF_ERROR(ParsePiece(message, context, model.pieces.emplace_back()));
        break;
      }
      // A message field may occur more than once; protobuf merges the occurrences, and reading
      // each into the same struct does exactly that for scalar fields.
      case 2:
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, message));
        LY_RETURN_IF_ERROR(ParseTrainerSpec(message, model));
        break;
      case 3:
        LY_RETURN_IF_ERROR(reader.ReadString(type, field, message));
        LY_RETURN_IF_ERROR(ParseNormalizerSpec(message, model));
        break;
      default:
        LY_RETURN_IF_ERROR(reader.Skip(type));
    }
  }
  return model;
}

std::string SpmModelTypeName(int model_type) {
  switch (model_type) {
    case SpmModelProto::kUnigram:
      return "UNIGRAM";
    case SpmModelProto::kBpe:
      return "BPE";
    case SpmModelProto::kWord:
      return "WORD";
    case SpmModelProto::kChar:
      return "CHAR";
  }
  return std::to_string(model_type);
}

}  // namespace lychee::tokenizer_internal
