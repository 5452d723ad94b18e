#!/usr/bin/env bash
# Make a small language-model study with the infl executable and render its report: make_text_study.sh DIR [RANKS]
# (the byte-level GPT-2 tests/ref/gpt2_bytes on the 44 sequences of tests/ref/gpt2_bytes_text.txt; two
# prompt/completion queries and two text queries; per-token and per-layer terms; self-influence).
# Writes DIR/{factors.h5,scores_prompts.h5,scores_text.h5,self.h5,report_prompts.html,report_text.html}; prints the
# prompt report's path.
set -euo pipefail
dir=$1
np=${2:-2}
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
model=$src/tests/ref/gpt2_bytes
data=(-train "text:$src/tests/ref/gpt2_bytes_text.txt")
mkdir -p "$dir"
printf 'The cat\n>>>\nsat.\n%%\nA stitch\n>>>\nin ti\n%%\n' > "$dir/prompts.txt"
run() { "$mpi" --oversubscribe -n "$np" "$exe" "$@" >"$dir/log.txt" 2>&1 || { cat "$dir/log.txt" >&2; return 1; }; }
run fit -model "$model" "${data[@]}" -out "$dir/factors.h5" -overwrite
run score -model "$model" -factors "$dir/factors.h5" "${data[@]}" -query_prompts "$dir/prompts.txt" -score_topk 3 \
  -score_per_token -score_per_layer -out "$dir/scores_prompts.h5" -overwrite
run score -model "$model" -factors "$dir/factors.h5" "${data[@]}" -query "text:$src/tests/ref/gpt2_bytes_text.txt" \
  -query_indices 2,7 -score_topk 3 -out "$dir/scores_text.h5" -overwrite
run self -model "$model" -factors "$dir/factors.h5" "${data[@]}" -out "$dir/self.h5" -overwrite
run report -model "$model" -scores "$dir/scores_prompts.h5" -self "$dir/self.h5" "${data[@]}" -out "$dir/report_prompts.html" -overwrite
run report -model "$model" -scores "$dir/scores_text.h5" "${data[@]}" -query "text:$src/tests/ref/gpt2_bytes_text.txt" \
  -out "$dir/report_text.html" -overwrite
echo "$dir/report_prompts.html"
