#!/usr/bin/env bash
# The Lanczos run behind -ihvp_deflate in infl ihvp and infl fidelity, on the reference MLP
# tests/ref/mlp_small.safetensors (19,410 parameters) with Fashion-MNIST training examples, 2 queries:
#  - resumption: infl fidelity stopped in the middle of the Lanczos run (-checkpoint_stop_after 3 of its 8 steps:
#    status 3, OUT.ihvp.partial and no output), rerun and stopped again in the block solve after the Lanczos run (it
#    resumes the Lanczos run at step 3), then rerun to the end (it restores the Ritz pairs without a pass over the data
#    and resumes the solve), gives the uninterrupted run's table exactly (2 ranks); a rerun with another
#    -ihvp_deflate is refused naming the file; infl ihvp resumed the same way across 2 and 3 ranks (the vectors are
#    stored whole) gives the uninterrupted scores to rounding, and the rerun removes the OUT.ihvp.partial.tmp of a run
#    killed while writing its checkpoint, saying so; -progress_interval 0 prints a line per Lanczos step
#    (the uninterrupted run: its table is the same as the stopped runs' without lines);
#  - the bound of the Lanczos vectors follows -mem_limit: the default K is lowered (the line says to what and why,
#    with numbers that agree: 2K + 11 vectors fit the room, 2K + 13 do not) or dropped; an explicit -ihvp_deflate
#    that does not fit is an error naming -ihvp_deflate and -mem_limit; a limit below the stage's other bytes is
#    refused before the first solve;
#  - breakdown: on 3 training examples the empirical Fisher plus damping has 4 distinct eigenvalues, so the run stops
#    at step 4 of 210 and deflates 3 (the exact answer against LAPACK is in test_ihvp).
# Part "resume" (the first item) or "mem" (the others): two ctest entries of one script.
set -euo pipefail
part=${1:?usage: ihvp_deflate.sh resume|mem}
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
fm=idx:/usr/share/datasets/fashion-mnist
dir=$PWD/ihvp_deflate_$part
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
EXE=$exe MPIEXEC=$mpi
. "$src/tests/lib/checks.sh" # run
fail() { echo "FAIL: $*"; exit 1; }
go() { # go NP STATUS LOG ARGS...: infl ARGS on NP ranks must exit with STATUS (0; 3: stopped after a checkpoint; 1: an error)
  local np=$1 want=$2 log=$3 st
  shift 3
  st=$(run "$np" "$@" 2>/dev/null)
  cp last.log "$log"
  [ "$st" = "$want" ] || { cat "$log"; fail "infl $* exited with $st, expected $want"; }
}
has() { grep -qF -- "$2" "$1" || { grep -v "^  ihvp query" "$1" | head -40; fail "$1 has no line with: $2"; }; }
same() { # same A B DATASET...: identical datasets
  local a=$1 b=$2
  shift 2
  for d in "$@"; do h5diff "$a" "$b" "$d" "$d" >/dev/null || fail "$d differs between $a and $b: $(h5diff -r "$a" "$b" "$d" "$d" | head -5)"; done
}
data=(-model "$src/tests/ref/mlp_small.safetensors" -train "$fm/train" -train_limit 256)
solve=("${data[@]}" -query "$fm/t10k" -query_limit 16 -query_indices 0:2 -ekfac_damping 1 -ihvp_ksp_rtol 1e-10
  -ihvp_deflate 2 -ihvp_deflate_steps 8)

if [ "$part" = resume ]; then
# infl fidelity at 2 ranks: stopped in the Lanczos run, then in the block solve, then run to the end (the factors,
# only an input here, fitted at 1 rank: a third of the CPU time of 2)
go 1 0 fit.txt fit "${data[@]}" -out factors.h5
fid=("${solve[@]}" -factors factors.h5)
go 2 0 fref.txt fidelity "${fid[@]}" -progress_interval 0 -out fref.h5
has fref.txt "ihvp: deflation: 8 Lanczos steps ("
# the fidelity table's rows line up (every cell padded to its column's widest, "EK-FAC r32" included)
has fref.txt "| EK-FAC r"
[ "$(grep '^| ' fref.txt | awk '{ print length($0) }' | sort -u | wc -l)" = 1 ] && [ "$(grep -c '^| ' fref.txt)" = 5 ] || fail "the fidelity table's rows differ in length: $(grep '^| ' fref.txt)"
[ "$(grep -c '^  ihvp deflation: Lanczos step [1-7] of 8, .* s, ETA [0-9]* s$' fref.txt)" = 7 ] || fail "-progress_interval 0: not one progress line per Lanczos step 1..7: $(grep 'Lanczos step' fref.txt)"
its=$(sed -n 's/^ihvp: block CG: 2 queries, \([0-9]*\) iterations.*/\1/p' fref.txt)
[ -n "$its" ] && [ "$its" -gt 8 ] || fail "the uninterrupted solve took '$its' iterations; the test needs more than 8"
go 2 3 f1.txt fidelity "${fid[@]}" -checkpoint_stop_after 3 -out f.h5
has f1.txt "the Lanczos run of -ihvp_deflate) stopped after step 3 of 8 (-checkpoint_stop_after 3); its progress is saved in f.h5.ihvp.partial"
[ -f f.h5.ihvp.partial ] && [ ! -e f.h5 ] || fail "after the stop in the Lanczos run: no f.h5.ihvp.partial, or an output"
go 2 1 f0.txt fidelity "${fid[@]}" -ihvp_deflate 3 -out f.h5
has f0.txt "f.h5.ihvp.partial holds the progress of another run"
go 2 3 f2.txt fidelity "${fid[@]}" -checkpoint_stop_after 8 -out f.h5
has f2.txt "ihvp: deflation: resuming the Lanczos run from f.h5.ihvp.partial at step 3 of 8"
has f2.txt "ihvp: deflation: 8 Lanczos steps (3 restored,"
has f2.txt "ihvp (Krylov solves) stopped after iteration 8 (-checkpoint_stop_after 8)"
go 2 0 f3.txt fidelity "${fid[@]}" -out f.h5
has f3.txt "ihvp: deflation: restored from f.h5.ihvp.partial (no pass over the data): 8 Lanczos steps"
has f3.txt "ihvp: resuming the block solve from f.h5.ihvp.partial at iteration 8"
! grep -q "Lanczos steps (" f3.txt || fail "the last rerun ran Lanczos steps: $(grep 'Lanczos steps (' f3.txt)"
same fref.h5 f.h5 /pearson /spearman /topk_overlap /relative_error /krylov_iterations
[ ! -e f.h5.ihvp.partial ] || fail "f.h5.ihvp.partial was left after the output was written"
echo "ok: infl fidelity stopped in the Lanczos run (step 3) and in the solve (iteration 8), resumed: the same table; another -ihvp_deflate refused"

# infl ihvp across rank counts (the vectors are stored whole): stopped in the Lanczos run at 2 ranks, in the solve
# at 3, finished at 2: the uninterrupted scores to rounding
go 2 0 ref.txt ihvp "${solve[@]}" -score_save_all -out ref.h5
go 2 3 s1.txt ihvp "${solve[@]}" -score_save_all -checkpoint_stop_after 3 -out r.h5
# a kill while the next checkpoint was being written leaves r.h5.ihvp.partial.tmp (here its first 4 KiB): the rerun
# removes it, saying so, and resumes from the last complete checkpoint
head -c 4096 r.h5.ihvp.partial > r.h5.ihvp.partial.tmp
go 3 3 s2.txt ihvp "${solve[@]}" -score_save_all -checkpoint_stop_after 8 -out r.h5
has s2.txt "ihvp: removed r.h5.ihvp.partial.tmp, left by a run stopped while writing its checkpoint (r.h5.ihvp.partial, the last complete one, is kept and resumed from)"
has s2.txt "ihvp: deflation: resuming the Lanczos run from r.h5.ihvp.partial at step 3 of 8"
go 2 0 s3.txt ihvp "${solve[@]}" -score_save_all -out r.h5
has s3.txt "ihvp: deflation: restored from r.h5.ihvp.partial (no pass over the data)"
has s3.txt "ihvp: resuming the block solve from r.h5.ihvp.partial at iteration 8"
h5diff -p 1e-5 ref.h5 r.h5 /scores /scores >/dev/null || fail "/scores resumed across 2 and 3 ranks differ from the uninterrupted run by more than 1e-5: $(h5diff -p 1e-5 -r ref.h5 r.h5 /scores /scores | head -5)"
echo "ok: infl ihvp stopped at 2 ranks, resumed at 3, finished at 2: /scores within 1e-5 of the uninterrupted run"

fi

if [ "$part" = mem ]; then
# -mem_limit bounds the Lanczos vectors of the default K (these runs only need the deflation line: -ihvp_ksp_max_it 1)
quick=("${data[@]}" -query "$fm/t10k" -query_limit 16 -query_indices 0:2 -ekfac_damping 1 -ihvp_ksp_max_it 1
  -ihvp_allow_unconverged)
kof() { sed -n 's/^ihvp: note: deflation of K = \([0-9]*\) instead of 100 eigenvalues.*/\1/p' "$1"; }
# an explicit K beyond the limit: an error that also tells the stage's other bytes R, from which the limits below
# leave about 1.3 MiB (K a few) and nothing for the Lanczos vectors
# (a limit below the stage's other bytes and the libraries' 64 MiB is refused before the first solve)
go 2 1 m0.txt ihvp "${quick[@]}" -mem_limit 80M -out m0.h5
has m0.txt "-mem_limit 80M (80 MiB per rank) cannot hold the "
has m0.txt "MiB that the Krylov IHVP solves of 2 queries keep (training shard, factors, the queries' vectors and scratch) plus 64 MiB for the libraries; raise -mem_limit"
! grep -q "ihvp: query" m0.txt || fail "-mem_limit 80M: refused only after the solves"
go 2 1 m4.txt ihvp "${quick[@]}" -mem_limit 115M -ihvp_deflate 80 -out m4.h5
has m4.txt "-ihvp_deflate 80: its Lanczos run keeps 171 vectors of 19410 parameters"
has m4.txt "lower -ihvp_deflate, raise -mem_limit or use more ranks"
res=$(sed -n 's/.* leaves after the \([0-9.]*\) MiB the Krylov stage holds otherwise.*/\1/p' m4.txt)
[ -n "$res" ] || fail "the error of -ihvp_deflate 80 does not say what the stage holds otherwise: $(grep error m4.txt)"
lim=$(awk -v r="$res" 'BEGIN { printf "%dK", (64 + r + 1.3) * 1024 }')
go 2 0 m1.txt ihvp "${quick[@]}" -mem_limit "$lim" -out m1.h5
has m1.txt "must fit in the "
has m1.txt "MiB) leaves after the $res MiB the Krylov stage holds otherwise and 64 MiB for the libraries"
k1=$(kof m1.txt)
line=$(grep "^ihvp: note: deflation of K = " m1.txt)
per=$(sed -n 's/.*(\([0-9.]*\) MiB per rank each).*/\1/p' <<<"$line")
room=$(sed -n 's/.*must fit in the \([0-9.]*\) MiB per rank that.*/\1/p' <<<"$line")
awk -v k="$k1" -v p="$per" -v r="$room" 'BEGIN { exit !(k > 0 && k < 100 && (2 * k + 11) * p <= r * 1.05 + 0.05 && (2 * k + 13) * p >= r * 0.95 - 0.05) }' ||
  fail "K $k1 does not match the room: 2K + 11 vectors of $per MiB against $room MiB ($line)"
has m1.txt "ihvp: deflation: $((2 * k1 + 10)) Lanczos steps ("
# (0.5 MiB above the stage's bytes and the libraries', less than the 13 vectors of K = 1: a limit below them is refused
# before the first solve)
lim0=$(awk -v r="$res" 'BEGIN { printf "%dK", (64 + r) * 1024 + 512 }')
go 2 0 m3.txt ihvp "${quick[@]}" -mem_limit "$lim0" -out m3.h5
has m3.txt "ihvp: note: no deflation: the 2K + 11 Lanczos vectors of K = 1"
! grep -q "Lanczos steps (" m3.txt || fail "-mem_limit $lim0: a Lanczos run without room for it"
echo "ok: the stage holds $res MiB besides; -mem_limit $lim: K $k1 ($((2 * k1 + 11)) vectors of $per MiB in $room MiB), $lim0: none; an explicit K beyond it is an error"

# breakdown: 3 examples, empirical Fisher, damping 1e-4 on every layer: 4 distinct eigenvalues
go 2 0 b.txt ihvp -model "$src/tests/ref/mlp_small.safetensors" -train "$fm/train" -train_limit 3 -query "$fm/t10k" \
  -query_limit 16 -query_indices 0:2 -ekfac_damping 1e-4 -ihvp_curvature empirical -out b.h5
has b.txt "ihvp: note: the Lanczos run of -ihvp_deflate stopped at step 4 of 210: beta "
has b.txt "so C + D has 4 distinct eigenvalues along it, all found; deflating only 3 of them"
has b.txt "the 3 largest ("
has b.txt "map onto 1.0000e-04"
echo "ok: breakdown on 3 examples: stopped at step 4 of 210, 3 eigenvalues deflated onto the damping"
fi
echo "ihvp_deflate.sh $part: all checks passed"
