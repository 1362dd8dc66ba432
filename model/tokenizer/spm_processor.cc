// SPDX-License-Identifier: Apache-2.0
// libsentencepiece wrapper (see the header for why no Abseil header may be included here).
#include "model/tokenizer/spm_processor.h"

#include <sentencepiece_processor.h>

namespace lychee::tokenizer_internal {

struct SpmProcessor::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SpmProcessor::SpmProcessor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmProcessor::~SpmProcessor() = default;

std::unique_ptr<SpmProcessor> SpmProcessor::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SpmProcessor>(new SpmProcessor(std::move(impl)));
}

std::vector<int> SpmProcessor::Encode(std::string_view text) const {
  std::vector<int> ids;
  if (!impl_->sp.Encode(text, &ids).ok()) ids.clear();
  return ids;
}

int SpmProcessor::size() const { return impl_->sp.GetPieceSize(); }
std::string SpmProcessor::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
int SpmProcessor::PieceToId(std::string_view piece) const {
  const int id = impl_->sp.PieceToId(piece);
  // PieceToId answers unk_id for unknown pieces; tell them apart from "<unk>" itself.
  if (id == impl_->sp.unk_id() && impl_->sp.IdToPiece(id) != piece) return -1;
  return id;
}
bool SpmProcessor::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SpmProcessor::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SpmProcessor::IsByte(int id) const { return impl_->sp.IsByte(id); }
int SpmProcessor::bos_id() const { return impl_->sp.bos_id(); }
int SpmProcessor::eos_id() const { return impl_->sp.eos_id(); }
int SpmProcessor::unk_id() const { return impl_->sp.unk_id(); }
int SpmProcessor::pad_id() const { return impl_->sp.pad_id(); }

}  // namespace lychee::tokenizer_internal
