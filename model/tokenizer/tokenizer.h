// SPDX-License-Identifier: Apache-2.0
// Public tokenizer API: text <-> token ids, plus incremental (streaming) detokenization.
//
// Two back ends sit behind `Tokenizer`: Hugging Face `tokenizer.json` (byte-level BPE as in
// Llama 3 / Qwen 2-3, SentencePiece-style BPE with byte fallback as in Llama 2 / Mistral /
// stories260K) and SentencePiece `tokenizer.model` (spm_processor.h). Both are immutable after
// loading, so one instance may be shared by all request threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace lychee {

// Special-token settings shared by every back end (from tokenizer_config.json and the
// tokenizer file itself).
struct SpecialTokenConfig {
  std::optional<int32_t> bos_id;
  std::vector<int32_t> eos_ids;  // First entry is the primary EOS; generation stops on any.
  std::optional<int32_t> unk_id;
  std::optional<int32_t> pad_id;
  bool add_bos = false;  // Encode(..., add_special_tokens=true) prepends BOS.
  bool add_eos = false;  // Encode(..., add_special_tokens=true) appends EOS.
};

class Tokenizer {
 public:
  // Loads from a directory holding tokenizer.json (preferred) or tokenizer.model, plus an optional
  // tokenizer_config.json (add_bos_token / add_eos_token / bos_token / eos_token / unk_token) and,
  // in a model folder, generation_config.json's eos_token_id (appended to eos_ids()).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);

  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. `add_special_tokens` adds BOS/EOS as the tokenizer's post-processor and
  // tokenizer_config.json say (Hugging Face semantics). Special tokens written in the text
  // (e.g. "<|im_start|>") are always recognised as single tokens.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // Decodes ids to UTF-8 text; ids outside [0, vocab_size()) are skipped. Invalid UTF-8 produced
  // by byte tokens becomes U+FFFD, so the result is always valid UTF-8.
  virtual std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const = 0;

  // Number of ids, added tokens included (max id + 1).
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  // The vocabulary string of `id` (e.g. "Ġhello", "▁hello", "<0x0A>"); "" when out of range.
  virtual std::string IdToToken(int32_t id) const = 0;
  // True for control/special tokens (BOS, EOS, "<|im_start|>", ...), which
  // skip_special_tokens drops.
  virtual bool IsSpecial(int32_t id) const = 0;

  std::optional<int32_t> bos_id() const { return special_.bos_id; }
  const std::vector<int32_t>& eos_ids() const { return special_.eos_ids; }
  std::optional<int32_t> eos_id() const {
    return special_.eos_ids.empty() ? std::nullopt : std::optional<int32_t>(special_.eos_ids[0]);
  }
  std::optional<int32_t> unk_id() const { return special_.unk_id; }
  std::optional<int32_t> pad_id() const { return special_.pad_id; }
  bool add_bos() const { return special_.add_bos; }
  bool add_eos() const { return special_.add_eos; }
  const SpecialTokenConfig& special_tokens() const { return special_; }

 protected:
  SpecialTokenConfig special_;
};

// Incremental detokenizer, one per generated sequence (not thread-safe). Push() returns only text
// that is final: it never ends inside a UTF-8 character, and the concatenation of every Push()
// and the final Flush() equals tokenizer.Decode(all ids). Works like vLLM/TGI: it decodes a small
// window of recent ids and emits the new suffix once it no longer ends in U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  // `context` (normally the prompt's ids) is left context only: its last few ids are decoded
  // with the new ones so that the first generated token reads as it does mid-text (with
  // SentencePiece, "▁time" after "Once upon a" streams as " time", not "time"), as vLLM does.
  // The context's own text is never returned.
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                absl::Span<const int32_t> context);

  // Appends one id; returns the newly completed text (possibly empty).
  std::string Push(int32_t id);
  // Returns whatever is still held back (e.g. an incomplete byte sequence, as U+FFFD).
  std::string Flush();

 private:
  // How many trailing context ids are kept (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET).
  static constexpr size_t kContextIds = 5;

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;  // Context tail, then every pushed id.
  size_t prefix_offset_ = 0;  // Start of the decode window.
  size_t read_offset_ = 0;    // End of the ids whose text was already emitted.
};

}  // namespace lychee
