#!/usr/bin/env bash
# Data of the fortunes language-model study (jobs/fortunes.opts): links Debian's fortune files (package `fortunes`,
# /usr/share/games/fortunes) into DIR/train and DIR/valid, and prints the corpus's unigram byte entropy, the level a
# model that ignores context reaches.
#   DIR/train  every plain-text fortune file but the held-out one and the two of ASCII drawings (art, ascii-art)
#   DIR/valid  wisdom (held out: its fortunes are the validation set)
# The .dat index files and the .u8 links are not text corpora and are left out.
# Usage: jobs/fortunes-data.sh [DIR] [SRC]   (DIR default fortunes-data, SRC default /usr/share/games/fortunes)
set -euo pipefail
dir=${1:-fortunes-data}
src=${2:-/usr/share/games/fortunes}
[ -d "$src" ] || { echo "fortunes-data.sh: $src does not exist; install Debian's package fortunes (apt-get install fortunes)" >&2; exit 1; }
rm -rf "$dir/train" "$dir/valid"
mkdir -p "$dir/train" "$dir/valid"
for f in "$src"/*; do
  name=$(basename "$f")
  case $name in *.dat | *.u8 | art | ascii-art) continue ;; esac
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  if [ "$name" = wisdom ]; then ln -s "$f" "$dir/valid/$name"; else ln -s "$f" "$dir/train/$name"; fi
done
# document bytes (the "%" separator lines are not part of any document; infl reads the files in byte order of names)
docbytes() { LC_ALL=C cat "$1"/* | grep -vx '%' | od -An -v -tu1 | tr -s ' ' '\n' | grep -v '^$'; }
docbytes "$dir/train" | sort -n | uniq -c > "$dir/train.unigram"
docbytes "$dir/valid" | sort -n | uniq -c > "$dir/valid.unigram"
awk 'FNR == NR { c[$2] = $1; n += $1; next }
     { v[$2] = $1; m += $1 }
     END {
       for (b in c) h -= c[b] / n * log(c[b] / n)
       for (b in v) x -= v[b] * log(((b in c) ? c[b] : 0) + 1) - v[b] * log(n + 256)
       printf "train: %d files, %d document bytes, unigram byte entropy %.4f nats = %.4f bits/byte\n", files, n, h, h / log(2)
       printf "valid: %d document bytes, cross-entropy under the train unigram (add-one) %.4f nats = %.4f bits/byte\n", m, x / m, x / m / log(2)
     }' files="$(ls "$dir/train" | wc -l)" "$dir/train.unigram" "$dir/valid.unigram"
