// SPDX-License-Identifier: Apache-2.0
#include "engine/eos_tokens.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "common/status.h"

namespace lychee {
namespace {

void AddUnique(std::vector<int32_t>& ids, int32_t id) {
  if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
}

// generation_config.json's eos_token_id (int or list), when the file exists.
absl::StatusOr<std::vector<int32_t>> GenerationConfigEos(const std::string& model_dir) {
  const std::string path = JoinPath(model_dir, "generation_config.json");
  if (!FileExists(path)) return std::vector<int32_t>{};
  LY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(path + ": not a JSON object");
  }
  std::vector<int32_t> ids;
  const auto it = json.find("eos_token_id");
  if (it == json.end() || it->is_null()) return ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(path + ": eos_token_id must hold integers");
      }
      ids.push_back(v.get<int32_t>());
    }
  } else {
    return absl::InvalidArgumentError(path + ": eos_token_id must be an integer or a list");
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> CollectEosTokenIds(const std::string& model_dir,
                                                        const ModelConfig& config,
                                                        const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (int32_t id : config.eos_token_ids) AddUnique(ids, id);
  LY_ASSIGN_OR_RETURN(std::vector<int32_t> generation_eos, GenerationConfigEos(model_dir));
  for (int32_t id : generation_eos) AddUnique(ids, id);
  for (int32_t id : tokenizer.eos_ids()) AddUnique(ids, id);
  return ids;
}

}  // namespace lychee
