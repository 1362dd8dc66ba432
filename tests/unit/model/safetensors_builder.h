// SPDX-License-Identifier: Apache-2.0
// Test helper: builds safetensors bytes in memory (header JSON + packed data) and writes files, so
// tests own their inputs instead of depending on checked-in binaries.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace lychee::testing_util {

class SafetensorsBuilder {
 public:
  // Adds a tensor with raw little-endian element bytes.
  SafetensorsBuilder& AddRaw(const std::string& name, const std::string& dtype,
                             std::vector<int64_t> shape, const std::vector<uint8_t>& bytes) {
    const uint64_t begin = data_.size();
    data_.insert(data_.end(), bytes.begin(), bytes.end());
    header_[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data_.size()}}};
    return *this;
  }
  template <typename T>
  SafetensorsBuilder& Add(const std::string& name, const std::string& dtype,
                          std::vector<int64_t> shape, const std::vector<T>& values) {
    std::vector<uint8_t> bytes(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
    return AddRaw(name, dtype, std::move(shape), bytes);
  }
  SafetensorsBuilder& AddF32(const std::string& name, std::vector<int64_t> shape,
                             const std::vector<float>& values) {
    return Add(name, "F32", std::move(shape), values);
  }
  SafetensorsBuilder& Metadata(const nlohmann::json& metadata) {
    header_["__metadata__"] = metadata;
    return *this;
  }
  // Direct access for tests that corrupt the header.
  nlohmann::json& header() { return header_; }

  std::string Bytes() const { return Assemble(header_.dump()); }
  std::string Assemble(const std::string& header_json) const {
    std::string out(8, '\0');
    const uint64_t n = header_json.size();
    std::memcpy(out.data(), &n, 8);
    out += header_json;
    out.append(reinterpret_cast<const char*>(data_.data()), data_.size());
    return out;
  }

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::vector<uint8_t> data_;
};

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace lychee::testing_util
