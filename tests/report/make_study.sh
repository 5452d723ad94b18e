#!/usr/bin/env bash
# Make a small study with the infl executable and render its report: make_study.sh DIR [RANKS]
# (the reference MLP tests/ref/mlp_small.safetensors on 256 Fashion-MNIST training examples, 6 queries).
# Writes DIR/{factors.h5,scores.h5,self.h5,report.html}; prints the report's path.
set -euo pipefail
dir=$1
np=${2:-2}
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
fm=idx:/usr/share/datasets/fashion-mnist
model=$src/tests/ref/mlp_small.safetensors
data=(-train "$fm/train" -train_limit 256)
mkdir -p "$dir"
run() { "$mpi" --oversubscribe -n "$np" "$exe" "$@" >"$dir/log.txt" 2>&1 || { cat "$dir/log.txt" >&2; return 1; }; }
run fit -model "$model" "${data[@]}" -out "$dir/factors.h5" -overwrite
run score -model "$model" -factors "$dir/factors.h5" "${data[@]}" -query "$fm/t10k" -query_limit 16 -query_indices 0:6 \
  -score_topk 6 -score_save_all -score_per_layer -out "$dir/scores.h5" -overwrite
run self -model "$model" -factors "$dir/factors.h5" "${data[@]}" -out "$dir/self.h5" -overwrite
run report -scores "$dir/scores.h5" -self "$dir/self.h5" "${data[@]}" -query "$fm/t10k" -query_limit 16 \
  -class_names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot" -out "$dir/report.html" -overwrite
echo "$dir/report.html"
