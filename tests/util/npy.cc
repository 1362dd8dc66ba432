// SPDX-License-Identifier: Apache-2.0
// .npy parsing: magic, version, header dict ('descr', 'fortran_order', 'shape'), raw data.
#include "tests/util/npy.h"

#include <cstring>
#include <string_view>

#include "common/file.h"
#include "common/status.h"

namespace lychee::testing {
namespace {

// Returns the text after `'key':` up to the next ',' or '}' at depth 0 (tuples kept whole).
absl::StatusOr<std::string> DictValue(std::string_view header, std::string_view key) {
  const std::string quoted = "'" + std::string(key) + "'";
  const size_t k = header.find(quoted);
  if (k == std::string_view::npos) {
    return absl::InvalidArgumentError("npy header lacks " + quoted);
  }
  size_t i = header.find(':', k + quoted.size());
  if (i == std::string_view::npos) return absl::InvalidArgumentError("npy header malformed");
  ++i;
  int depth = 0;
  size_t j = i;
  for (; j < header.size(); ++j) {
    const char c = header[j];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  std::string value(header.substr(i, j - i));
  const size_t b = value.find_first_not_of(" ");
  const size_t e = value.find_last_not_of(" ");
  return b == std::string::npos ? std::string() : value.substr(b, e - b + 1);
}

}  // namespace

int64_t NpyArray::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  LY_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) {
    return absl::InvalidArgumentError(path + ": not an .npy file");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len =
        static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else {
    if (bytes.size() < 12) return absl::InvalidArgumentError(path + ": truncated header");
    for (int b = 0; b < 4; ++b) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + b])) << (8 * b);
    }
    offset = 12;
  }
  if (offset + header_len > bytes.size()) {
    return absl::InvalidArgumentError(path + ": truncated header");
  }
  const std::string_view header(bytes.data() + offset, header_len);
  LY_ASSIGN_OR_RETURN(std::string descr, DictValue(header, "descr"));
  LY_ASSIGN_OR_RETURN(std::string fortran, DictValue(header, "fortran_order"));
  LY_ASSIGN_OR_RETURN(std::string shape_text, DictValue(header, "shape"));
  if (fortran != "False") return absl::InvalidArgumentError(path + ": Fortran order unsupported");

  NpyArray array;
  std::string dims = shape_text;
  for (char& c : dims) {
    if (c == '(' || c == ')' || c == ',') c = ' ';
  }
  size_t pos = 0;
  while (pos < dims.size()) {
    const size_t b = dims.find_first_not_of(' ', pos);
    if (b == std::string::npos) break;
    size_t e = dims.find(' ', b);
    if (e == std::string::npos) e = dims.size();
    array.shape.push_back(std::stoll(dims.substr(b, e - b)));
    pos = e;
  }

  size_t elem = 0;
  if (descr == "'<f4'" || descr == "'<i4'") {
    elem = 4;
  } else if (descr == "'<f8'" || descr == "'<i8'") {
    elem = 8;
  } else {
    return absl::InvalidArgumentError(path + ": unsupported dtype " + descr);
  }
  const int64_t n = array.NumElements();
  const char* data = bytes.data() + offset + header_len;
  if (offset + header_len + static_cast<size_t>(n) * elem > bytes.size()) {
    return absl::InvalidArgumentError(path + ": truncated data");
  }
  array.data.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const char* p = data + i * elem;
    if (descr == "'<f4'") {
      float v;
      std::memcpy(&v, p, 4);
      array.data[i] = v;
    } else if (descr == "'<f8'") {
      std::memcpy(&array.data[i], p, 8);
    } else if (descr == "'<i4'") {
      int32_t v;
      std::memcpy(&v, p, 4);
      array.data[i] = v;
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      array.data[i] = static_cast<double>(v);
    }
  }
  return array;
}

}  // namespace lychee::testing
