// SPDX-License-Identifier: Apache-2.0
// Reading files: whole-file reads for small text files and read-only memory maps for weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lychee {

// Reads a whole file. NotFound when it does not exist, Internal for I/O errors.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// A read-only private memory map of a whole file; unmapped on destruction. Movable, not copyable.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Reset();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// True when `path` names an existing regular file / directory.
bool FileExists(const std::string& path);
bool DirectoryExists(const std::string& path);

// Joins two path components with exactly one '/'.
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace lychee
