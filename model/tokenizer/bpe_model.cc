// SPDX-License-Identifier: Apache-2.0
// Byte-pair encoding with a rank-ordered heap, as in tokenizers' Word::merge_all: O(n log n) per
// piece, which matters for SentencePiece-style models where a whole sentence is one piece.
#include "model/tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <queue>
#include <utility>

#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") {
    return absl::UnimplementedError(
        fmt::format("unsupported model type \"{}\" (only BPE is implemented)", type));
  }
  if (!model.value("continuing_subword_prefix", nlohmann::json()).is_null() &&
      !model.at("continuing_subword_prefix").get<std::string>().empty()) {
    return absl::UnimplementedError("BPE continuing_subword_prefix is not supported");
  }
  if (!model.value("end_of_word_suffix", nlohmann::json()).is_null() &&
      !model.at("end_of_word_suffix").get<std::string>().empty()) {
    return absl::UnimplementedError("BPE end_of_word_suffix is not supported");
  }
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  const nlohmann::json& vocab = model.at("vocab");
  if (!vocab.is_object()) return absl::InvalidArgumentError("model.vocab must be an object");
  bpe->token_to_id_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    // An integer first: get<int64_t>() of a float that does not fit is undefined behaviour.
    if (!id_json.is_number_integer()) {
      return absl::InvalidArgumentError(
          fmt::format("model.vocab[\"{}\"] = {} is not an integer id", token, id_json.dump()));
    }
    const int64_t id = id_json.is_number_unsigned() && id_json.get<uint64_t>() > (1u << 24)
                           ? int64_t{-1}
                           : id_json.get<int64_t>();
    if (id < 0 || id > (1 << 24)) {
      return absl::InvalidArgumentError(
          fmt::format("model.vocab[\"{}\"] = {} is out of range", token, id_json.dump()));
    }
    bpe->token_to_id_[token] = static_cast<int32_t>(id);
    if (static_cast<size_t>(id) >= bpe->id_to_token_.size()) {
      bpe->id_to_token_.resize(static_cast<size_t>(id) + 1);
      bpe->has_id_.resize(static_cast<size_t>(id) + 1, false);
    }
    bpe->id_to_token_[static_cast<size_t>(id)] = token;
    bpe->has_id_[static_cast<size_t>(id)] = true;
  }

  const nlohmann::json& merges = model.at("merges");
  bpe->merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ', 1);  // A leading space would be part of the token.
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(
            fmt::format("model.merges[{}] = \"{}\" is not \"a b\"", rank, line));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      if (!merge.is_array() || merge.size() != 2) {
        return absl::InvalidArgumentError(fmt::format("model.merges[{}] is not a pair", rank));
      }
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    }
    auto l = bpe->token_to_id_.find(left);
    auto r = bpe->token_to_id_.find(right);
    auto m = bpe->token_to_id_.find(left + right);
    if (l == bpe->token_to_id_.end() || r == bpe->token_to_id_.end() ||
        m == bpe->token_to_id_.end()) {
      return absl::InvalidArgumentError(
          fmt::format("model.merges[{}] (\"{}\", \"{}\") uses a token missing from the vocab", rank,
                      left, right));
    }
    // The first (lowest-rank) occurrence of a pair wins, as in tokenizers.
    bpe->merges_.try_emplace(PairKey(l->second, r->second), Merge{rank, m->second});
    ++rank;
  }

  const nlohmann::json unk = model.value("unk_token", nlohmann::json());
  if (unk.is_string()) bpe->unk_id_ = bpe->TokenToId(unk.get<std::string>());
  bpe->fuse_unk_ = model.value("fuse_unk", false);
  bpe->byte_fallback_ = model.value("byte_fallback", false);
  bpe->ignore_merges_ = model.value("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    bpe->byte_ids_[b] = bpe->TokenToId(fmt::format("<0x{:02X}>", b)).value_or(-1);
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= size() || !has_id_[static_cast<size_t>(id)]) return nullptr;
  return &id_to_token_[static_cast<size_t>(id)];
}

void BpeModel::Tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (auto id = TokenToId(piece)) {
      out.push_back(*id);
      return;
    }
  }

  // Initial symbols: one per character, or its byte tokens, or unk.
  std::vector<int32_t> ids;
  ids.reserve(piece.size());
  bool last_was_unk = false;
  std::string key;
  for (std::string_view ch : SplitUtf8Chars(piece)) {
    key.assign(ch);
    if (auto it = token_to_id_.find(key); it != token_to_id_.end()) {
      ids.push_back(it->second);
      last_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        last_was_unk = false;
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (!(fuse_unk_ && last_was_unk)) ids.push_back(*unk_id_);
      last_was_unk = true;
    }
    // Without an unk token, tokenizers fails the whole encode; we drop the character instead.
  }
  if (ids.size() <= 1) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  // Doubly linked symbols; a min-heap of candidate merges ordered by (rank, position).
  const int n = static_cast<int>(ids.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    auto it = merges_.find(PairKey(ids[pos], ids[next[pos]]));
    if (it == merges_.end()) return;
    heap.push({it->second.rank, pos, ids[pos], ids[next[pos]], it->second.merged_id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> dead(n, false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale entries: a side was merged away or changed since the candidate was pushed.
    if (dead[c.pos] || ids[c.pos] != c.left || next[c.pos] < 0 || ids[next[c.pos]] != c.right) {
      continue;
    }
    const int right = next[c.pos];
    ids[c.pos] = c.merged;
    dead[right] = true;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

}  // namespace lychee::tokenizer_internal
