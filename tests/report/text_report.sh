#!/usr/bin/env bash
# infl report of a language model's scores (tests/report/make_text_study.sh at 2 ranks): the markup (xmllint), the
# queries' prompt and completion, every shown training sequence's index, score and per-token sum against the scores
# file, one coloured span per token of each per-token row, uncoloured text without per-token terms, a headless
# browser rendering (report/browser_check.sh), and bad inputs.
# Exit status: 0 all checks passed; 1 a check failed; 77 the other checks passed but xmllint or chromium is missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
dir=$PWD/report_text
rm -rf "$dir"
html=$(bash "$here/make_text_study.sh" "$dir" 2)
fail() { echo "FAIL: $*"; exit 1; }
skip=0

if command -v xmllint >/dev/null; then
  for f in "$html" "$dir/report_text.html"; do
    xmllint --noout --nonet "$f" || fail "$f is not well-formed XML (XHTML)"
  done
  echo "ok: the text reports are well formed"
else
  skip=1
fi

# content against the scores file: the titles "Proponent k: training sequence I, score S (token terms sum to T; ..."
python3 - "$dir" <<'PY'
import re, subprocess, sys
d = sys.argv[1]
def h5(path, name):
    out = subprocess.run(['h5dump', '-y', '-w', '0', '-d', name, path], capture_output=True, text=True, check=True).stdout
    body = out[out.index('DATA {') + 6:out.rindex('}')]
    return [float(v) for v in re.findall(r'[-+0-9.eE]+(?:nan)?', body.replace('(', ' ').replace(')', ' '))]
def check(html, scores, per_token):
    page = open(html, encoding='utf-8').read()
    top, tsc = h5(scores, '/topk/train_indices'), h5(scores, '/topk/scores')
    bot, bsc = h5(scores, '/bottomk/train_indices'), h5(scores, '/bottomk/scores')
    K, Q = 3, 2
    titles = re.findall(r'<h4>(Proponent|Opponent|Highest|Lowest) (\d+): training sequence (\d+), score ([-+0-9.e]+)(?: \(token terms sum to ([-+0-9.e]+))?', page)
    assert len(titles) == 2 * K * Q, f'{html}: {len(titles)} training sequences shown, expected {2 * K * Q}'
    for n, (kind, k, idx, s, tsum) in enumerate(titles):
        q, i = n // (2 * K), n % (2 * K)
        want_i, want_s = (top, tsc) if i < K else (bot, bsc)
        e = q * K + (i % K)
        assert int(idx) == int(want_i[e]), f'{html}: entry {n} shows training sequence {idx}, the file has {want_i[e]}'
        assert abs(float(s) - want_s[e]) <= 1e-3 * abs(want_s[e]), f'{html}: entry {n} shows score {s}, the file has {want_s[e]}'
        if per_token:
            assert tsum and abs(float(tsum) - want_s[e]) <= 1e-3 * abs(want_s[e]) + 1e-9, f'{html}: per-token sum {tsum} != score {want_s[e]}'
        else:
            assert not tsum, f'{html}: per-token sum shown without per-token terms'
    if per_token:  # one span per token (byte-level, ASCII text) in each training block
        offs = h5(scores, '/per_token/offsets')
        lens = sorted(int(b - a) for a, b in zip(offs, offs[1:]))
        blocks = re.findall(r'training sequence \d+, score [^<]*</h4><div class="tokens">(.*?)</div>', page, re.S)
        shown = sorted(len(re.findall('<span ', b)) for b in blocks)
        assert shown == lens, f'{html}: spans per training block {shown}, tokens per /per_token row {lens}'
    print(f'ok: {html}: {len(titles)} training sequences match {scores}')
check(f'{d}/report_prompts.html', f'{d}/scores_prompts.h5', True)
check(f'{d}/report_text.html', f'{d}/scores_text.h5', False)
page = open(f'{d}/report_prompts.html', encoding='utf-8').read()
for part in ('>Prompt</h4>', '>Completion (the query loss is -log p(completion | prompt))</h4>', 'self-influence'):
    assert part in page, f'report_prompts.html lacks {part}'
prompts = [re.sub('<[^>]+>', '', b) for b in re.findall(r'>Prompt</h4><div class="tokens">(.*?)</div>', page, re.S)]
completions = [re.sub('<[^>]+>', '', b) for b in re.findall(r'prompt\)\)</h4><div class="tokens">(.*?)</div>', page, re.S)]
assert prompts == ['The cat\n', 'A stitch\n'] and completions == ['sat.\n', 'in ti\n'], f'prompts {prompts}, completions {completions}'
print('ok: prompts, completions and self-influence shown')
PY

# every training sequence kept (-score_topk 44 = N): the bottom-k then holds positive scores too, which are shown as
# "Lowest k ... not an opponent" (and a top-k score <= 0 as "Highest k ... not a proponent"), never as opponents
"$mpi" --oversubscribe -n 2 "$exe" score -model "$src/tests/ref/gpt2_bytes" -factors "$dir/factors.h5" -train "text:$src/tests/ref/gpt2_bytes_text.txt" \
  -query_prompts "$dir/prompts.txt" -score_topk 44 -out "$dir/scores_all.h5" > "$dir/log_all.txt" 2>&1 || { cat "$dir/log_all.txt"; fail "infl score -score_topk 44"; }
"$mpi" --oversubscribe -n 2 "$exe" report -model "$src/tests/ref/gpt2_bytes" -scores "$dir/scores_all.h5" -train "text:$src/tests/ref/gpt2_bytes_text.txt" \
  -report_k 44 -out "$dir/report_all.html" > "$dir/log_all.txt" 2>&1 || { cat "$dir/log_all.txt"; fail "infl report -report_k 44"; }
python3 - "$dir/report_all.html" <<'PY'
import re, sys
page = open(sys.argv[1], encoding='utf-8').read()
titles = re.findall(r'<h4>(Proponent|Opponent|Highest|Lowest) \d+: training sequence \d+, score ([-+0-9.e]+)([^<]*)</h4>', page)
assert len(titles) == 2 * 2 * 44, f'{len(titles)} training sequences shown, expected {2 * 2 * 44}'
want = {'Proponent': lambda s: s > 0, 'Opponent': lambda s: s < 0, 'Highest': lambda s: s <= 0, 'Lowest': lambda s: s >= 0}
for kind, s, rest in titles:
    assert want[kind](float(s)), f'"{kind}" shown with score {s}'
    assert (kind in ('Highest', 'Lowest')) == ('not a' in rest), f'"{kind}" with score {s}: remark "{rest}"'
n = sum(kind == 'Lowest' for kind, _, _ in titles)
assert n > 0, 'no bottom-k entry of positive score: the check did not exercise the labels'
print(f'ok: every kept score shown with the label of its sign ({n} "Lowest" entries of positive score)')
PY

# bad inputs
expect_fail() { # expect_fail "message part" args...
  local want=$1 out
  shift
  if out=$("$mpi" --oversubscribe -n 2 "$exe" report "$@" 2>&1); then fail "infl report $* succeeded"; fi
  grep -qF -- "$want" <<<"$out" || fail "infl report $*: message does not contain \"$want\": $out"
  echo "ok: fails with \"$want\""
}
expect_fail "holds token sequences: give -model DIR" -scores "$dir/scores_prompts.h5" -train "text:$src/tests/ref/gpt2_bytes_text.txt" -out "$dir/x.html"
expect_fail "was computed on other training data" -model "$src/tests/ref/gpt2_bytes" -scores "$dir/scores_prompts.h5" -train "text:$src/tests/ref/gpt2_bytes_text.txt" -train_limit 40 -out "$dir/x.html"
[ ! -e "$dir/x.html" ] || fail "a failed report left $dir/x.html"

# a real browser
set +e
bash "$here/browser_check.sh" "$html"
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 77 ] || fail "browser check of $html"
[ $rc -eq 77 ] && skip=1
if [ $skip -eq 1 ]; then echo "SKIP: xmllint or chromium missing: some checks not run; the others passed"; exit 77; fi
echo "text_report.sh: all checks passed"
