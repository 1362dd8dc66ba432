// SPDX-License-Identifier: Apache-2.0
// HeadRoles: the mask, its JSON file format and its checks.
#include "sparsity/head_roles.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lychee::sparsity {

namespace {
constexpr char kFormat[] = "lychee-head-roles/1";
}  // namespace

HeadRoles::HeadRoles(int64_t num_layers, int64_t num_kv_heads)
    : num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      retrieval_(static_cast<size_t>(std::max<int64_t>(0, num_layers * num_kv_heads)), 0) {
  for (int64_t h = 0; h < num_kv_heads && num_layers > 0; ++h) {
    retrieval_[static_cast<size_t>(h)] = 1;
  }
}

void HeadRoles::set_retrieval(int64_t layer, int64_t kv_head, bool value) {
  if (layer == 0) return;  // layer 0 stays all retrieval
  retrieval_[static_cast<size_t>(layer * num_kv_heads_ + kv_head)] = value ? 1 : 0;
}

int64_t HeadRoles::num_retrieval() const {
  return static_cast<int64_t>(std::count(retrieval_.begin(), retrieval_.end(), uint8_t{1}));
}

std::string HeadRoles::ToJson(const std::string& calibration_json) const {
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["num_layers"] = num_layers_;
  j["num_kv_heads"] = num_kv_heads_;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (int64_t l = 0; l < num_layers_; ++l) {
    nlohmann::ordered_json row = nlohmann::ordered_json::array();
    for (int64_t h = 0; h < num_kv_heads_; ++h) {
      if (retrieval(l, h)) row.push_back(h);
    }
    rows.push_back(std::move(row));
  }
  j["retrieval"] = std::move(rows);
  if (!calibration_json.empty()) j["calibration"] = nlohmann::ordered_json::parse(calibration_json);
  // One layer per line keeps the file readable and diffable.
  std::string out = "{\n";
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!first) out += ",\n";
    first = false;
    out += "  " + nlohmann::json(it.key()).dump() + ": ";
    if (it.key() == "retrieval") {
      out += "[\n";
      for (size_t l = 0; l < it->size(); ++l) {
        out += "    " + (*it)[l].dump() + (l + 1 < it->size() ? ",\n" : "\n");
      }
      out += "  ]";
    } else {
      out += it->dump();
    }
  }
  return out + "\n}\n";
}

absl::StatusOr<HeadRoles> HeadRoles::FromJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("head roles: not a JSON object");
  }
  if (j.value("format", std::string()) != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("head roles: \"format\" must be \"", kFormat, "\""));
  }
  const auto int_field = [&j](const char* key) -> absl::StatusOr<int64_t> {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("head roles: \"", key, "\" must be a positive integer"));
    }
    return j[key].get<int64_t>();
  };
  LY_ASSIGN_OR_RETURN(const int64_t layers, int_field("num_layers"));
  LY_ASSIGN_OR_RETURN(const int64_t heads, int_field("num_kv_heads"));
  if (!j.contains("retrieval") || !j["retrieval"].is_array() ||
      static_cast<int64_t>(j["retrieval"].size()) != layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("head roles: \"retrieval\" must be an array of ", layers, " layers"));
  }
  HeadRoles roles(layers, heads);
  for (int64_t l = 0; l < layers; ++l) {
    const nlohmann::json& row = j["retrieval"][static_cast<size_t>(l)];
    if (!row.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("head roles: layer ", l, " is not an array"));
    }
    std::set<int64_t> seen;
    for (const nlohmann::json& h : row) {
      if (!h.is_number_integer() || h.get<int64_t>() < 0 || h.get<int64_t>() >= heads) {
        return absl::InvalidArgumentError(absl::StrCat("head roles: layer ", l, ": ", h.dump(),
                                                       " is not a kv head in [0, ", heads, ")"));
      }
      if (!seen.insert(h.get<int64_t>()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("head roles: layer ", l, ": kv head ", h.get<int64_t>(), " repeated"));
      }
      roles.set_retrieval(l, h.get<int64_t>(), true);
    }
    if (l == 0 && static_cast<int64_t>(seen.size()) != heads) {
      return absl::InvalidArgumentError(
          "head roles: layer 0 must list every kv head (it chooses the first sets)");
    }
  }
  return roles;
}

absl::StatusOr<HeadRoles> HeadRoles::Load(const std::string& path, int64_t num_layers,
                                          int64_t num_kv_heads) {
  LY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  auto roles = FromJson(text);
  if (!roles.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", roles.status().message()));
  }
  if (roles->num_layers() != num_layers || roles->num_kv_heads() != num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": head roles for ", roles->num_layers(), " layers × ", roles->num_kv_heads(),
        " kv heads, but the model has ", num_layers, " × ", num_kv_heads));
  }
  return roles;
}

}  // namespace lychee::sparsity
