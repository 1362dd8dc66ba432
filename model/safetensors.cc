// SPDX-License-Identifier: Apache-2.0
// Safetensors reader. The format: 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the byte
// buffer that the offsets index. Files come from users, so every length, offset and size is
// checked before any pointer into the map is formed.
#include "model/safetensors.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lychee {
namespace {

using Json = nlohmann::json;

// The safetensors crate refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three deep ({name: {shape: [..]}}); anything far deeper is garbage, and
// nlohmann's recursive parser must not be handed unbounded nesting.
constexpr int kMaxJsonDepth = 32;

absl::Status FileError(const std::string& file, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", std::string(what)));
}

absl::Status TensorError(const std::string& file, const std::string& tensor,
                         std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": tensor `", tensor, "`: ", std::string(what)));
}

// Rejects nesting deeper than kMaxJsonDepth without parsing (string-aware bracket count).
bool NestingWithinLimit(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (ch == '}' || ch == ']') {
      --depth;
    }
  }
  return true;
}

absl::StatusOr<Json> ParseJson(std::string_view text, const std::string& file) {
  if (!NestingWithinLimit(text)) return FileError(file, "JSON nested too deeply");
  try {
    Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) return FileError(file, "header is not valid JSON");
    return json;
  } catch (const std::exception& e) {
    return FileError(file, absl::StrCat("header is not valid JSON: ", e.what()));
  }
}

absl::StatusOr<DType> ParseDType(const std::string& name, const std::string& file,
                                 const std::string& tensor) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return TensorError(
      file, tensor,
      absl::StrCat("dtype \"", name, "\" is not supported (F32, F16, BF16, I32, I64)"));
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One header entry → TensorView, with offsets checked against the data buffer.
absl::StatusOr<TensorView> ParseEntry(const std::string& name, const Json& entry,
                                      const std::string& file, const uint8_t* data,
                                      uint64_t data_size) {
  if (!entry.is_object()) return TensorError(file, name, "header entry must be an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(file, name, "`dtype` missing or not a string");
  }
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(file, name, "`shape` missing or not an array");
  }
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return TensorError(file, name, "`data_offsets` must be two non-negative integers");
  }
  TensorView view;
  view.name = name;
  view.file = file;
  LY_ASSIGN_OR_RETURN(view.dtype, ParseDType(dtype_it->get<std::string>(), file, name));
  uint64_t num_elements = 1;
  for (const Json& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return TensorError(file, name, absl::StrCat("shape entry ", dim.dump(), " is invalid"));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(num_elements, d, &num_elements)) {
      return TensorError(file, name, "shape overflows");
    }
    view.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(num_elements, DTypeSize(view.dtype), &expected_bytes)) {
    return TensorError(file, name, "shape overflows");
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return TensorError(
        file, name,
        absl::StrCat("data_offsets [", begin, ", ", end, "] outside the data buffer of ", data_size,
                     " bytes (file truncated?)"));
  }
  if (end - begin != expected_bytes) {
    return TensorError(file, name,
                       absl::StrCat("data_offsets span ", end - begin, " bytes but ",
                                    std::string(DTypeName(view.dtype)), " ",
                                    ShapeString(view.shape), " needs ", expected_bytes));
  }
  view.data = data + begin;
  view.nbytes = static_cast<size_t>(expected_bytes);
  return view;
}

// Parses one file's header (`bytes` is the whole file, `size` bytes) and adds its tensors to
// `tensors` (duplicates are errors); the views point into `bytes`.
absl::Status ParseFile(const std::string& file, const uint8_t* bytes, uint64_t size,
                       std::map<std::string, TensorView>* tensors) {
  if (size < 8) {
    return FileError(
        file, absl::StrCat("file is ", size, " bytes, too short for a safetensors header length"));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);
  if constexpr (std::endian::native == std::endian::big) header_len = __builtin_bswap64(header_len);
  if (header_len > kMaxHeaderBytes) {
    return FileError(file, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                        kMaxHeaderBytes, " bytes"));
  }
  if (header_len > size - 8) {
    return FileError(file, absl::StrCat("header length ", header_len, " exceeds the ", size - 8,
                                        " bytes after the length field (file truncated?)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);
  LY_ASSIGN_OR_RETURN(const Json json, ParseJson(header, file));
  if (!json.is_object()) return FileError(file, "header must be a JSON object");
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return FileError(file, "`__metadata__` must be an object");
      continue;
    }
    LY_ASSIGN_OR_RETURN(TensorView view, ParseEntry(name, entry, file, data, data_size));
    auto [it, inserted] = tensors->emplace(name, std::move(view));
    if (!inserted) {
      return TensorError(file, name, absl::StrCat("also defined in ", it->second.file));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseFile(const MappedFile& mapped, std::map<std::string, TensorView>* tensors) {
  return ParseFile(mapped.path(), mapped.data(), mapped.size(), tensors);
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Reads an index's weight_map: tensor name → shard file name, shard names in first-use order.
absl::Status ReadIndex(const std::string& index_path,
                       std::map<std::string, std::string>* weight_map,
                       std::vector<std::string>* shards) {
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(index_path));
  LY_ASSIGN_OR_RETURN(const Json json, ParseJson(text, index_path));
  if (!json.is_object()) return FileError(index_path, "must be a JSON object");
  auto it = json.find("weight_map");
  if (it == json.end() || !it->is_object()) {
    return FileError(index_path, "`weight_map` missing or not an object");
  }
  std::set<std::string> seen;
  for (const auto& [name, shard] : it->items()) {
    if (!shard.is_string() || shard.get<std::string>().empty()) {
      return FileError(index_path,
                       absl::StrCat("`weight_map.", name, "` must be a shard file name"));
    }
    const std::string shard_name = shard.get<std::string>();
    (*weight_map)[name] = shard_name;
    if (seen.insert(shard_name).second) shards->push_back(shard_name);
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
  }
  return 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24, exact in fp32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) {
    // Inf, or NaN with its payload kept.
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsArchive> SafetensorsArchive::Open(const std::string& path) {
  std::string file_path = path;
  if (DirectoryExists(path)) {
    const std::string index = JoinPath(path, "model.safetensors.index.json");
    const std::string single = JoinPath(path, "model.safetensors");
    if (FileExists(index)) {
      file_path = index;
    } else if (FileExists(single)) {
      file_path = single;
    } else {
      return absl::NotFoundError(
          absl::StrCat(path, ": holds neither model.safetensors.index.json nor model.safetensors"));
    }
  }
  SafetensorsArchive archive;
  if (!EndsWith(file_path, ".index.json")) {
    LY_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(file_path));
    archive.files_.push_back(std::make_unique<MappedFile>(std::move(mapped)));
    LY_RETURN_IF_ERROR(ParseFile(*archive.files_.back(), &archive.tensors_));
    return archive;
  }
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shards;
  LY_RETURN_IF_ERROR(ReadIndex(file_path, &weight_map, &shards));
  const std::string dir = DirName(file_path);
  for (const std::string& shard : shards) {
    LY_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(JoinPath(dir, shard)));
    archive.files_.push_back(std::make_unique<MappedFile>(std::move(mapped)));
    LY_RETURN_IF_ERROR(ParseFile(*archive.files_.back(), &archive.tensors_));
  }
  // The index is the contract: each tensor must be where it says.
  for (const auto& [name, shard] : weight_map) {
    auto it = archive.tensors_.find(name);
    const std::string shard_path = JoinPath(dir, shard);
    if (it == archive.tensors_.end()) {
      return TensorError(file_path, name,
                         absl::StrCat("listed in weight_map but absent from ", shard_path));
    }
    if (it->second.file != shard_path) {
      return TensorError(
          file_path, name,
          absl::StrCat("weight_map says ", shard_path, " but found in ", it->second.file));
    }
  }
  return archive;
}

absl::StatusOr<SafetensorsArchive> SafetensorsArchive::FromBuffer(const std::string& name,
                                                                  std::string_view bytes) {
  SafetensorsArchive archive;
  LY_RETURN_IF_ERROR(ParseFile(name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                               &archive.tensors_));
  return archive;
}

bool SafetensorsArchive::Contains(const std::string& name) const {
  return tensors_.count(name) > 0;
}

absl::StatusOr<const TensorView*> SafetensorsArchive::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    const std::string where =
        files_.empty()       ? std::string("archive")
        : files_.size() == 1 ? files_[0]->path()
                             : absl::StrCat(files_.size(), " shards starting ", files_[0]->path());
    return absl::NotFoundError(absl::StrCat(where, ": tensor `", name, "` not found"));
  }
  return &it->second;
}

std::vector<std::string> SafetensorsArchive::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<std::vector<float>> SafetensorsArchive::ReadF32(
    const std::string& name, absl::Span<const int64_t> expected_shape) const {
  LY_ASSIGN_OR_RETURN(const TensorView* view, Find(name));
  if (!expected_shape.empty() && absl::Span<const int64_t>(view->shape) != expected_shape) {
    return TensorError(view->file, name,
                       absl::StrCat("shape ", ShapeString(view->shape), ", expected ",
                                    ShapeString(expected_shape)));
  }
  const size_t n = static_cast<size_t>(view->NumElements());
  std::vector<float> out(n);
  // memcpy per element: the map gives no alignment guarantee for the tensor's start.
  switch (view->dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out.data(), view->data, n * sizeof(float));
      break;
    case DType::kF16:
    case DType::kBF16: {
      const bool is_half = view->dtype == DType::kF16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, view->data + 2 * i, 2);
        out[i] = is_half ? HalfToFloat(bits) : BFloat16ToFloat(bits);
      }
      break;
    }
    case DType::kI32:
    case DType::kI64:
      return TensorError(view->file, name,
                         absl::StrCat("dtype ", std::string(DTypeName(view->dtype)),
                                      " cannot be read as floats (F32, F16, BF16)"));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> SafetensorsArchive::ReadI64(const std::string& name) const {
  LY_ASSIGN_OR_RETURN(const TensorView* view, Find(name));
  const size_t n = static_cast<size_t>(view->NumElements());
  std::vector<int64_t> out(n);
  switch (view->dtype) {
    case DType::kI64:
      if (n > 0) std::memcpy(out.data(), view->data, n * sizeof(int64_t));
      break;
    case DType::kI32:
      for (size_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, view->data + 4 * i, 4);
        out[i] = v;
      }
      break;
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return TensorError(view->file, name,
                         absl::StrCat("dtype ", std::string(DTypeName(view->dtype)),
                                      " cannot be read as integers (I32, I64)"));
  }
  return out;
}

}  // namespace lychee
