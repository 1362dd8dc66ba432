// SPDX-License-Identifier: Apache-2.0
// lychee-tokenize: encode stdin text to a JSON array of ids, or decode a JSON array of ids.
//
//   lychee-tokenize --model DIR [--no-special] < text.txt      → [1, 15043, ...]
//   lychee-tokenize --model DIR --decode [--no-special] < ids.json → text
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"

int main(int argc, char** argv) {
  CLI::App app{"Tokenize stdin with a model's tokenizer (tokenizer.json or tokenizer.model)"};
  std::string model_dir;
  bool decode = false;
  bool no_special = false;
  app.add_option("--model", model_dir, "model folder, or a folder holding only tokenizer files")
      ->required();
  app.add_flag("--decode", decode, "read a JSON array of ids from stdin and print the text");
  app.add_flag("--no-special", no_special,
               "encode: do not add BOS/EOS; decode: leave special tokens out of the text");
  CLI11_PARSE(app, argc, argv);

  auto tokenizer = lychee::Tokenizer::FromDirectory(model_dir);
  if (!tokenizer.ok()) {
    std::cerr << "lychee-tokenize: " << tokenizer.status().message() << "\n";
    return 1;
  }
  const std::string input((std::istreambuf_iterator<char>(std::cin)),
                          std::istreambuf_iterator<char>());
  if (!decode) {
    if (!lychee::tokenizer_internal::IsValidUtf8(input)) {
      std::cerr << "lychee-tokenize: stdin is not valid UTF-8\n";
      return 1;
    }
    const std::vector<int32_t> ids = (*tokenizer)->Encode(input, !no_special);
    std::cout << nlohmann::json(ids).dump() << "\n";
    return 0;
  }

  const nlohmann::json parsed = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_array()) {
    std::cerr << "lychee-tokenize: --decode expects a JSON array of token ids on stdin\n";
    return 1;
  }
  std::vector<int32_t> ids;
  const int32_t vocab_size = (*tokenizer)->vocab_size();
  for (size_t i = 0; i < parsed.size(); ++i) {
    const nlohmann::json& value = parsed[i];
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= vocab_size) {
      std::cerr << "lychee-tokenize: element " << i << " (" << value.dump()
                << ") is not a token id in [0, " << vocab_size << ")\n";
      return 1;
    }
    ids.push_back(static_cast<int32_t>(value.get<int64_t>()));
  }
  std::cout << (*tokenizer)->Decode(ids, no_special);
  std::cout.flush();
  return 0;
}
