// SPDX-License-Identifier: Apache-2.0
// Narrow wrapper around libsentencepiece's processor.
//
// sentencepiece_processor.h declares `namespace absl { using std::string_view; }`, which clashes
// with the packaged Abseil (built with its own absl::string_view class), so the library header
// is only ever included by spm_processor.cc, which includes no Abseil header.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lychee::tokenizer_internal {

class SpmProcessor {
 public:
  // Loads a tokenizer.model; nullptr with `*error` set on failure.
  static std::unique_ptr<SpmProcessor> Load(const std::string& path, std::string* error);
  ~SpmProcessor();

  std::vector<int> Encode(std::string_view text) const;
  int size() const;
  std::string IdToPiece(int id) const;
  // -1 when `piece` is not in the vocabulary.
  int PieceToId(std::string_view piece) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  int pad_id() const;

 private:
  struct Impl;
  explicit SpmProcessor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lychee::tokenizer_internal
