// SPDX-License-Identifier: Apache-2.0
// HeadRoles: LycheeDecode's static head-role mask [layers × kv heads] (ALGORITHMS.md §1.2).
// A retrieval head attends to every KV entry and chooses the set its index's sparse heads in
// deeper layers read; a sparse head reads only the set last chosen at its kv-head index by a
// shallower retrieval head. Layer 0 is all retrieval, so every index has a set before a sparse
// head needs one.
//
// File format (`lychee_head_roles.json`, written by lychee-calibrate):
//   {"format": "lychee-head-roles/1", "num_layers": N, "num_kv_heads": H,
//    "retrieval": [[0, 1], [1], [], ...],       // per layer, the retrieval kv heads
//    "calibration": {...}}                        // optional: how it was made (free form)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lychee::sparsity {

class HeadRoles {
 public:
  // All heads sparse except layer 0 (the least retrieval any mask has).
  HeadRoles(int64_t num_layers, int64_t num_kv_heads);

  int64_t num_layers() const { return num_layers_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  bool retrieval(int64_t layer, int64_t kv_head) const {
    return retrieval_[static_cast<size_t>(layer * num_kv_heads_ + kv_head)] != 0;
  }
  // Layer 0 cannot be made sparse (ignored there).
  void set_retrieval(int64_t layer, int64_t kv_head, bool value);
  int64_t num_retrieval() const;

  // The JSON text of the file format above; `calibration_json` (a JSON object's text, or empty)
  // is stored under "calibration".
  std::string ToJson(const std::string& calibration_json = "") const;
  // Parses the file format; InvalidArgument naming what is wrong (shape, layer 0 not all
  // retrieval, head out of range, duplicates).
  static absl::StatusOr<HeadRoles> FromJson(const std::string& text);
  // Reads and parses `path`; also checks the shape against the model's.
  static absl::StatusOr<HeadRoles> Load(const std::string& path, int64_t num_layers,
                                        int64_t num_kv_heads);

 private:
  int64_t num_layers_ = 0, num_kv_heads_ = 0;
  std::vector<uint8_t> retrieval_;  // [layers × kv heads]
};

// The file a model folder carries its mask in.
inline constexpr char kHeadRolesFileName[] = "lychee_head_roles.json";

}  // namespace lychee::sparsity
