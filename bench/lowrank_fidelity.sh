#!/usr/bin/env bash
# Rank-r query gradients (-score_rank r, Grosse et al. 2023 section 3.2) against full-rank EK-FAC scores on the fortunes
# GPT-2 (docs/FIDELITY.md): EK-FAC on the MLP layers fitted on the first N training windows, the scores of the prompt
# queries (jobs/fortunes-prompts.txt) and of held-out fortunes (windows of `wisdom`) against the same N windows at
# full rank and at every rank of RANKS_R; per query Pearson and Spearman over the training windows and the overlap of
# the 10 proponents (and 10 opponents) with full rank's.
#   bench/lowrank_fidelity.sh MODEL_DIR [OUT]
# Environment: N (training windows, default 2000), HELDOUT (query indices of wisdom's windows, default 0:10),
#   RANKS_R ("8 32"), QSETS (query sets scored, "prompts heldout"), NP (MPI ranks, 2), INFL_EXE (build/infl).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXE=${INFL_EXE:-$repo/build/infl}
MODEL=${1:?usage: bench/lowrank_fidelity.sh MODEL_DIR [OUT]}
OUT=${2:-lowrank-fidelity-out}
N=${N:-2000}
HELDOUT=${HELDOUT:-0:10}
RANKS_R=${RANKS_R:-"8 32"}
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$OUT"
cd "$OUT"
[ -d fortunes-data/train ] || "$repo/jobs/fortunes-data.sh" "$PWD/fortunes-data" >/dev/null
MP="mpiexec -n ${NP:-2}"
T=(-model "$MODEL" -train "text:$PWD/fortunes-data/train" -train_limit "$N")
[ -f factors.h5 ] || $MP "$EXE" fit "${T[@]}" -ekfac_layers mlp -out factors.h5 >fit.log
for qs in ${QSETS:-prompts heldout}; do
  if [ $qs = prompts ]; then Q=(-query_prompts "$repo/jobs/fortunes-prompts.txt"); else Q=(-query "text:$PWD/fortunes-data/valid" -query_indices "$HELDOUT"); fi
  for r in 0 $RANKS_R; do
    [ -f "${qs}_r$r.h5" ] || $MP "$EXE" score "${T[@]}" -factors factors.h5 "${Q[@]}" -score_rank "$r" -score_save_all -out "${qs}_r$r.h5" >"score_${qs}_r$r.log"
  done
done
/usr/bin/python3 - $RANKS_R <<'PYEOF'
import os, sys
import h5py, numpy as np
print("| queries | rank r | Pearson mean [min] | Spearman mean [min] | top-10 proponents shared, mean [min] | top-10 opponents shared |")
print("|---|---|---|---|---|---|")
rank = lambda x: np.argsort(np.argsort(x)).astype(float)
for qs in [q for q in ("prompts", "heldout") if os.path.exists(f"{q}_r0.h5")]:
    full = h5py.File(f"{qs}_r0.h5")["scores"][()].astype(np.float64)
    for r in sys.argv[1:]:
        low = h5py.File(f"{qs}_r{r}.h5")["scores"][()].astype(np.float64)
        pr = [np.corrcoef(a, b)[0, 1] for a, b in zip(low, full)]
        sp = [np.corrcoef(rank(a), rank(b))[0, 1] for a, b in zip(low, full)]
        top = [len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10 for a, b in zip(low, full)]
        bot = [len(set(np.argsort(a)[:10]) & set(np.argsort(b)[:10])) / 10 for a, b in zip(low, full)]
        print(f"| {qs} ({len(full)}) | {r} | {np.mean(pr):.4f} [{np.min(pr):.4f}] | {np.mean(sp):.4f} [{np.min(sp):.4f}] | "
              f"{np.mean(top):.2f} [{np.min(top):.1f}] | {np.mean(bot):.2f} |")
PYEOF
