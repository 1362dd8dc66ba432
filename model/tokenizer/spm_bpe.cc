// SPDX-License-Identifier: Apache-2.0
// SpmProcessor's normalization and BPE segmentation, in the order SentencePiece applies them.
#include <algorithm>
#include <queue>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/tokenizer/spm_processor.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581: what spaces become.

bool IsMergeTarget(int type) {
  // The library's BPE merges into normal, user-defined and unused pieces (unused ones are split
  // again afterwards); control, unknown and byte pieces are never produced by merging.
  return type == SpmModelProto::kNormal || type == SpmModelProto::kUserDefined ||
         type == SpmModelProto::kUnused;
}

}  // namespace

std::string SpmProcessor::Normalize(std::string_view text) const {
  // One normalization unit at the start of `rest`: a user-defined symbol (never normalized), a
  // character, or one invalid byte, which becomes U+FFFD. With the identity rule a unit is
  // output as is; returns {output, bytes consumed}.
  const auto next_unit = [this](std::string_view rest) -> std::pair<std::string_view, size_t> {
    if (const size_t n = MatchUserDefined(rest); n > 0) return {rest.substr(0, n), n};
    if (const size_t n = ValidUtf8Length(rest, 0); n > 0) return {rest.substr(0, n), n};
    return {kReplacementChar, 1};
  };
  const bool remove_extra = model_.remove_extra_whitespaces;
  if (remove_extra) {
    while (!text.empty() && next_unit(text).first == " ") text.remove_prefix(1);
  }
  std::string out;
  // Nothing, not even the dummy prefix, for empty input.
  if (text.empty()) return out;
  out.reserve(text.size() * 3 / 2 + kSpaceSymbol.size());
  const std::string_view space = model_.escape_whitespaces ? kSpaceSymbol : " ";
  if (model_.add_dummy_prefix) out.append(space);
  // With remove_extra_whitespaces, a run of spaces collapses to one: leading spaces of a unit are
  // dropped when the previous unit ended in a space.
  bool prev_space = remove_extra;
  while (!text.empty()) {
    auto [unit, consumed] = next_unit(text);
    text.remove_prefix(consumed);
    if (prev_space) {
      while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    }
    if (!unit.empty()) {
      for (char c : unit) {
        if (c == ' ') {
          out.append(space);
        } else {
          out.push_back(c);
        }
      }
      prev_space = unit.back() == ' ';
    }
    if (!remove_extra) prev_space = false;
  }
  if (remove_extra) {
    while (out.size() >= space.size() &&
           std::string_view(out).substr(out.size() - space.size()) == space) {
      out.resize(out.size() - space.size());
    }
  }
  return out;
}

std::vector<std::string_view> SpmProcessor::Segment(std::string_view normalized) const {
  struct Symbol {
    std::string_view piece;  // Empty once merged into its left neighbour.
    int prev = -1;
    int next = -1;
    bool frozen = false;  // User-defined symbols take part in no merge.
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < normalized.size();) {
    Symbol symbol;
    size_t n = MatchUserDefined(normalized.substr(pos));
    symbol.frozen = n > 0;
    if (n == 0) n = std::max<size_t>(ValidUtf8Length(normalized, pos), 1);
    symbol.piece = normalized.substr(pos, n);
    symbol.prev = static_cast<int>(symbols.size()) - 1;
    pos += n;
    symbol.next = pos < normalized.size() ? static_cast<int>(symbols.size()) + 1 : -1;
    symbols.push_back(symbol);
  }

  // Candidate merges, best first: highest score, then leftmost. A candidate goes stale when either
  // side has changed since; `length` detects that.
  struct Candidate {
    float score;
    int left;
    int right;
    size_t length;
  };
  const auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> agenda(worse);
  // How each unused piece was last formed, to split it again at the end.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;
  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
    const std::string_view merged(symbols[left].piece.data(),
                                  symbols[left].piece.size() + symbols[right].piece.size());
    const int id = PieceToId(merged);
    if (id < 0 || !IsMergeTarget(model_.pieces[id].type)) return;
    agenda.push({model_.pieces[id].score, left, right, merged.size()});
    if (IsUnused(id)) unmerge[merged] = {symbols[left].piece, symbols[right].piece};
  };
  for (size_t i = 1; i < symbols.size(); ++i)
    consider(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!agenda.empty()) {
    const Candidate top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.length) {
      continue;
    }
    left.piece = std::string_view(left.piece.data(), top.length);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  // Unused pieces are not output: they go back to the two pieces they were merged from.
  std::vector<std::string_view> out;
  const auto emit = [&](const auto& self, std::string_view piece) -> void {
    const auto it = unmerge.find(piece);
    if (!IsUnused(PieceToId(piece)) || it == unmerge.end()) {
      out.push_back(piece);
      return;
    }
    self(self, it->second.first);
    self(self, it->second.second);
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) emit(emit, symbols[i].piece);
  return out;
}

}  // namespace lychee::tokenizer_internal
