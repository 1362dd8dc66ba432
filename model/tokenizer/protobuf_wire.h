// SPDX-License-Identifier: Apache-2.0
// A minimal protobuf wire-format reader: enough to read a SentencePiece tokenizer.model without
// linking a protobuf library (a second protobuf in the process clashes with gRPC's).
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace lychee::tokenizer_internal {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// Reads one message's fields in order. Every read checks bounds; a failed read leaves the reader
// in an unspecified position and returns InvalidArgument naming `context` (e.g. "pieces[3]").
class WireReader {
 public:
  WireReader(std::string_view data, std::string_view context) : data_(data), context_(context) {}

  bool done() const { return pos_ == data_.size(); }

  // The next field's number and wire type.
  absl::Status ReadKey(uint32_t& field, WireType& type);
  absl::Status ReadVarint(uint64_t& value);
  absl::Status ReadFixed32(uint32_t& value);
  // The payload of a length-delimited field (a view into the input).
  absl::Status ReadBytes(std::string_view& value);
  // Skips the payload of a field this reader does not need. Groups (deprecated, never used by
  // sentencepiece) are rejected rather than parsed.
  absl::Status Skip(WireType type);

  // Typed reads that first check that the field has the wire type the schema says.
  absl::Status ReadInt32(WireType type, uint32_t field, int32_t& value);
  absl::Status ReadBool(WireType type, uint32_t field, bool& value);
  absl::Status ReadFloat(WireType type, uint32_t field, float& value);
  absl::Status ReadString(WireType type, uint32_t field, std::string_view& value);

 private:
  absl::Status Error(std::string_view what) const;
  absl::Status ExpectType(WireType actual, WireType expected, uint32_t field) const;

  std::string_view data_;
  std::string_view context_;
  size_t pos_ = 0;
};

}  // namespace lychee::tokenizer_internal
