// SPDX-License-Identifier: Apache-2.0
// The parts of a SentencePiece tokenizer.model (a serialized `sentencepiece.ModelProto`) that
// encoding needs, read with our own wire-format reader.
//
// Field numbers, from the public sentencepiece_model.proto (checked against Llama 2's file):
//   ModelProto      pieces = 1 (repeated SentencePiece), trainer_spec = 2, normalizer_spec = 3
//   SentencePiece   piece = 1 (string), score = 2 (float), type = 3 (enum Type below)
//   TrainerSpec     model_type = 3 (UNIGRAM 1, BPE 2, WORD 3, CHAR 4),
//                   treat_whitespace_as_suffix = 24, byte_fallback = 35,
//                   unk_piece = 45, bos_piece = 46, eos_piece = 47, pad_piece = 48
//   NormalizerSpec  name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3,
//                   remove_extra_whitespaces = 4, escape_whitespaces = 5
// The special ids (unk_id = 40 ... pad_id = 43) are not read: the library answers bos_id() etc.
// by looking up the *piece* (bos_piece, default "<s>") and checking its type, and so do we.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::tokenizer_internal {

struct SpmModelProto {
  enum PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  enum ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  struct Piece {
    std::string piece;
    float score = 0.0f;
    int type = kNormal;
  };
  std::vector<Piece> pieces;

  // TrainerSpec; defaults are the proto2 defaults of sentencepiece_model.proto.
  int model_type = kUnigram;
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  std::string pad_piece = "<pad>";

  // NormalizerSpec.
  std::string normalizer_name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Parses a serialized ModelProto. Unknown fields are skipped; malformed input is InvalidArgument.
absl::StatusOr<SpmModelProto> ParseSpmModelProto(std::string_view bytes);

// "UNIGRAM", "BPE", ... or the number, for error messages.
std::string SpmModelTypeName(int model_type);

}  // namespace lychee::tokenizer_internal
