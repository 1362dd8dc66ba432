// SPDX-License-Identifier: Apache-2.0
// Protobuf wire-format reader (see the header): varints, fixed32/64, length-delimited fields.
#include "model/tokenizer/protobuf_wire.h"

#include <fmt/format.h>

#include <cstring>

#include "common/status.h"

namespace lychee::tokenizer_internal {

absl::Status WireReader::Error(std::string_view what) const {
  return absl::InvalidArgumentError(
      fmt::format("malformed protobuf in {} at byte {}: {}", context_, pos_, what));
}

absl::Status WireReader::ExpectType(WireType actual, WireType expected, uint32_t field) const {
  if (actual == expected) return absl::OkStatus();
  return Error(fmt::format("field {} has wire type {}, expected {}", field,
                           static_cast<int>(actual), static_cast<int>(expected)));
}

absl::Status WireReader::ReadVarint(uint64_t& value) {
  value = 0;
  // At most 10 bytes carry 64 bits; a longer run of continuation bits is malformed.
  for (int shift = 0; shift < 70; shift += 7) {
    if (pos_ >= data_.size()) return Error("truncated varint");
    const auto byte = static_cast<uint8_t>(data_[pos_++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return absl::OkStatus();
  }
  return Error("varint longer than 10 bytes");
}

absl::Status WireReader::ReadKey(uint32_t& field, WireType& type) {
  uint64_t key = 0;
  LY_RETURN_IF_ERROR(ReadVarint(key));
  const uint64_t number = key >> 3;
  const uint64_t wire = key & 7;
  if (number == 0 || number > 0x1fffffff) return Error(fmt::format("bad field number {}", number));
  if (wire > 5) return Error(fmt::format("bad wire type {}", wire));
  field = static_cast<uint32_t>(number);
  type = static_cast<WireType>(wire);
  return absl::OkStatus();
}

absl::Status WireReader::ReadFixed32(uint32_t& value) {
  if (data_.size() - pos_ < 4) return Error("truncated fixed32");
  const auto* p = reinterpret_cast<const uint8_t*>(data_.data() + pos_);
  value = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  pos_ += 4;
  return absl::OkStatus();
}

absl::Status WireReader::ReadBytes(std::string_view& value) {
  uint64_t length = 0;
  LY_RETURN_IF_ERROR(ReadVarint(length));
  if (length > data_.size() - pos_) {
    return Error(fmt::format("length {} runs past the end", length));
  }
  value = data_.substr(pos_, length);
  pos_ += length;
  return absl::OkStatus();
}

absl::Status WireReader::Skip(WireType type) {
  switch (type) {
    case WireType::kVarint: {
      uint64_t ignored = 0;
      return ReadVarint(ignored);
    }
    case WireType::kFixed64:
      if (data_.size() - pos_ < 8) return Error("truncated fixed64");
      pos_ += 8;
      return absl::OkStatus();
    case WireType::kLengthDelimited: {
      std::string_view ignored;
      return ReadBytes(ignored);
    }
    case WireType::kFixed32: {
      uint32_t ignored = 0;
      return ReadFixed32(ignored);
    }
    case WireType::kStartGroup:
    case WireType::kEndGroup:
      break;
  }
  return Error("groups are not supported");
}

absl::Status WireReader::ReadInt32(WireType type, uint32_t field, int32_t& value) {
  LY_RETURN_IF_ERROR(ExpectType(type, WireType::kVarint, field));
  uint64_t raw = 0;
  LY_RETURN_IF_ERROR(ReadVarint(raw));
  // int32 is sign-extended to 64 bits on the wire; the low 32 bits are the value.
  value = static_cast<int32_t>(static_cast<uint32_t>(raw));
  return absl::OkStatus();
}

absl::Status WireReader::ReadBool(WireType type, uint32_t field, bool& value) {
  LY_RETURN_IF_ERROR(ExpectType(type, WireType::kVarint, field));
  uint64_t raw = 0;
  LY_RETURN_IF_ERROR(ReadVarint(raw));
  value = raw != 0;
  return absl::OkStatus();
}

absl::Status WireReader::ReadFloat(WireType type, uint32_t field, float& value) {
  LY_RETURN_IF_ERROR(ExpectType(type, WireType::kFixed32, field));
  uint32_t bits = 0;
  LY_RETURN_IF_ERROR(ReadFixed32(bits));
  static_assert(sizeof(float) == sizeof(bits));
  std::memcpy(&value, &bits, sizeof(value));
  return absl::OkStatus();
}

absl::Status WireReader::ReadString(WireType type, uint32_t field, std::string_view& value) {
  LY_RETURN_IF_ERROR(ExpectType(type, WireType::kLengthDelimited, field));
  return ReadBytes(value);
}

}  // namespace lychee::tokenizer_internal
