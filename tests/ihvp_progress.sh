#!/usr/bin/env bash
# Progress lines of the Krylov solves (infl ihvp, infl fidelity) at -progress_interval 0, on the reference MLP
# tests/ref/mlp_small.safetensors with 256 Fashion-MNIST training examples and 2 queries, at 2 ranks:
#  - one line per CG iteration 0..n of each query (n as the solve's summary and the output file report), the first
#    with the right-hand side norm, the residual norms decreasing (block minima) down to the stopping threshold, the
#    relative residual equal to residual / rhs norm, an ETA from the trend, "converged" on the last line only;
#  - the solution is the same with and without the monitor (-ihvp_ksp_monitor_cancel, given without a value as PETSc allows) and with a long interval
#    (no line): the full score matrix and the solve records are identical (h5diff, exact);
#  - a block solve stopped after 5 iterations resumes from OUT.ihvp.partial to the same results;
#  - a signal stops the deflation's Lanczos run at once (status 3) with its progress saved (its per-step progress
#    lines and its resumption are tested by ihvp_deflate.sh);
#  - a diverging solve says "ETA unknown"; infl fidelity prints the lines of its solves; a negative
#    -progress_interval is an error naming the option.
set -euo pipefail
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
fm=idx:/usr/share/datasets/fashion-mnist
model=$src/tests/ref/mlp_small.safetensors
dir=$PWD/ihvp_progress
rm -rf "$dir"
mkdir -p "$dir"
fail() { echo "FAIL: $*"; exit 1; }
run() { # run LOG args...: infl at 2 ranks, must succeed
  local log=$1
  shift
  "$mpi" --oversubscribe -n 2 "$exe" "$@" >"$log" 2>&1 || { cat "$log"; fail "infl $* failed"; }
}
data=(-model "$model" -train "$fm/train" -train_limit 256)
run "$dir/fit.txt" fit "${data[@]}" -out "$dir/factors.h5"
# no deflation (-ihvp_deflate 0): with it these solves take 8 iterations, too few lines to check a trend
solve=("${data[@]}" -factors "$dir/factors.h5" -query "$fm/t10k" -query_limit 16 -query_indices 0:2 -ekfac_damping 1
  -ihvp_ksp_rtol 1e-8 -ihvp_deflate 0)
run "$dir/monitor.txt" ihvp "${solve[@]}" -score_save_all -progress_interval 0 -out "$dir/monitor.h5"
run "$dir/cancel.txt" ihvp "${solve[@]}" -score_save_all -ihvp_ksp_monitor_cancel -progress_interval 0 -out "$dir/cancel.h5"
run "$dir/quiet.txt" ihvp "${solve[@]}" -score_save_all -progress_interval 1000 -out "$dir/quiet.h5"

# check_lines LOG Q N: the progress lines of query Q in LOG are iterations 0..N with the properties above
check_lines() {
  awk -v q="$2" -v n="$3" -v rtol=1e-8 '
    BEGIN { cnt = 0; neta = 0; err = 0; n += 0; rtol += 0 }
    function bad(msg) { print "FAIL: query " q ": " msg; err = 1; exit 1 }
    $0 ~ "^  ihvp query " q ": iteration " {
      # "  ihvp query Q: iteration K, residual norm R (relative to the right-hand side X, target T), E s, ETA ..."
      k = $5; sub(/,/, "", k); r = $8; rel = $14; sub(/,/, "", rel); tgt = $16; sub(/\),/, "", tgt)
      k += 0; r += 0; rel += 0; tgt += 0
      if (k != cnt) bad("line " cnt + 1 " is iteration " k ", expected " cnt)
      if (cnt == 0) { r0 = r; if (rel != 1) bad("iteration 0: relative residual " rel ", expected 1") }
      if (tgt != rtol) bad("target " tgt ", expected the -ihvp_ksp_rtol " rtol)
      if (r0 > 0 && (rel - r / r0 > 2e-3 * rel || r / r0 - rel > 2e-3 * rel)) bad("iteration " k ": relative " rel " is not residual / rhs norm = " r / r0)
      conv = ($0 ~ /ETA 0 s \(converged\)$/)
      if (conv && k != n) bad("iteration " k " says converged before the last iteration " n)
      if (!conv && rel <= rtol) bad("iteration " k ": relative residual " rel " below the target but not converged")
      if ($0 ~ /ETA [0-9.]+ s \([0-9]+ more iterations/) neta++
      b = int(k / 10); if (!(b in bmin) || r < bmin[b]) bmin[b] = r
      last = r; lastrel = rel; lastconv = conv; cnt++
    }
    END {
      if (err) exit 1
      if (cnt != n + 1) { print "FAIL: query " q ": " cnt " progress lines, expected " n + 1 " (iterations 0.." n ")"; exit 1 }
      if (!lastconv || lastrel > rtol) { print "FAIL: query " q ": the last line (relative " lastrel ") is not converged below " rtol; exit 1 }
      if (neta < n / 2) { print "FAIL: query " q ": only " neta " of " n + 1 " lines give an ETA from the trend"; exit 1 }
      for (i = 1; i <= int(n / 10); i++)
        if (bmin[i] >= bmin[i - 1]) { print "FAIL: query " q ": residual not decreasing: minimum " bmin[i] " over iterations " 10 * i ".. vs " bmin[i - 1] " before"; exit 1 }
      printf "ok: query %s: %d progress lines, residual %.3e -> %.3e (relative %s), %d with an ETA\n", q, cnt, r0, last, lastrel, neta
    }' "$1"
}
for q in 0 1; do
  n=$(sed -n "s/^ihvp: query $q: CONVERGED_RTOL, \([0-9]*\) iterations.*/\1/p" "$dir/monitor.txt")
  [ -n "$n" ] && [ "$n" -gt 10 ] || fail "no converged solve summary for query $q (or fewer than 10 iterations) in $dir/monitor.txt"
  check_lines "$dir/monitor.txt" "$q" "$n" || { grep "ihvp query $q:" "$dir/monitor.txt" | head -60; exit 1; }
done
h5dump -d /ihvp/iterations -y -w 0 "$dir/monitor.h5" | grep -q "$(sed -n 's/^ihvp: query 0: CONVERGED_RTOL, \([0-9]*\) iterations.*/\1/p' "$dir/monitor.txt"), *$(sed -n 's/^ihvp: query 1: CONVERGED_RTOL, \([0-9]*\) iterations.*/\1/p' "$dir/monitor.txt")" \
  || fail "/ihvp/iterations of $dir/monitor.h5 differs from the printed iteration counts"
for f in cancel quiet; do
  ! grep -q "^  ihvp query" "$dir/$f.txt" || fail "$f run printed progress lines: $(grep -m1 '^  ihvp query' "$dir/$f.txt")"
  for d in /scores /ihvp/iterations /ihvp/residual_norm /ihvp/rhs_norm; do
    h5diff "$dir/monitor.h5" "$dir/$f.h5" "$d" "$d" >/dev/null || fail "$d differs with the monitor and in the $f run: $(h5diff -r "$dir/monitor.h5" "$dir/$f.h5" "$d" "$d" | head -5)"
  done
  echo "ok: $f run: no progress line, /scores and the solve records identical to the monitored run"
done

# checkpoint and resume of the block solve: stopped after 5 iterations (-checkpoint_stop_after) it exits with status 3
# leaving OUT.ihvp.partial and no output; the same command resumes it and gives the uninterrupted run's results
set +e
"$mpi" --oversubscribe -n 2 "$exe" ihvp "${solve[@]}" -score_save_all -checkpoint_stop_after 5 -out "$dir/resume.h5" >"$dir/stop.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 3 ] || { cat "$dir/stop.txt"; fail "a solve stopped by -checkpoint_stop_after exited with $rc, expected 3"; }
grep -q "stopped after iteration 5 (-checkpoint_stop_after 5); its progress is saved in $dir/resume.h5.ihvp.partial" "$dir/stop.txt" || fail "the stopped solve does not name its checkpoint: $(grep error "$dir/stop.txt")"
[ -f "$dir/resume.h5.ihvp.partial" ] && [ ! -e "$dir/resume.h5" ] || fail "after the stop: no $dir/resume.h5.ihvp.partial, or an output"
run "$dir/resume.txt" ihvp "${solve[@]}" -score_save_all -out "$dir/resume.h5"
grep -q "^ihvp: resuming the block solve from $dir/resume.h5.ihvp.partial at iteration 5$" "$dir/resume.txt" || fail "the rerun did not resume: $(head -5 "$dir/resume.txt")"
! grep -q "^  ihvp query 0: iteration [0-4]," "$dir/resume.txt" || fail "the resumed run repeated iterations before 5"
for d in /scores /ihvp/iterations /ihvp/residual_norm; do
  h5diff "$dir/monitor.h5" "$dir/resume.h5" "$d" "$d" >/dev/null || fail "$d of the resumed run differs from the uninterrupted one: $(h5diff -r "$dir/monitor.h5" "$dir/resume.h5" "$d" "$d" | head -5)"
done
[ ! -e "$dir/resume.h5.ihvp.partial" ] || fail "the checkpoint $dir/resume.h5.ihvp.partial was left after the output was written"
echo "ok: stopped after 5 iterations (status 3), resumed from the checkpoint: /scores and the solve records identical"

# a diverging solve (Richardson with too large a step, no preconditioner): no ETA can be extrapolated
run "$dir/diverge.txt" ihvp "${data[@]}" -factors "$dir/factors.h5" -query "$fm/t10k" -query_limit 16 -query_indices 0:1 \
  -ekfac_damping 1 -ihvp_ksp_type richardson -ihvp_ksp_richardson_scale 3 -ihvp_pc_type none -ihvp_ksp_max_it 8 \
  -ihvp_allow_unconverged true -progress_interval 0 -out "$dir/diverge.h5"
nd=$(grep -c "^  ihvp query 0: iteration [1-9][0-9]*, .*, ETA unknown (the residual is not decreasing)$" "$dir/diverge.txt" || true)
nl=$(grep -c "^  ihvp query 0: iteration" "$dir/diverge.txt" || true)
[ "$nd" -ge 2 ] && [ "$nd" -eq $((nl - 1)) ] || { cat "$dir/diverge.txt"; fail "diverging solve: $nd of $nl progress lines say the ETA is unknown, expected all after iteration 0"; }
grep -q "^  ihvp query 0: iteration 0, .*, ETA unknown (no trend yet)$" "$dir/diverge.txt" || fail "diverging solve: iteration 0 line missing"
echo "ok: diverging solve: $nd lines with ETA unknown (the residual is not decreasing)"

run "$dir/fidelity.txt" fidelity "${solve[@]}" -progress_interval 0 -out "$dir/fidelity.h5"
its=$(h5dump -d /krylov_iterations -y -w 0 "$dir/fidelity.h5" | sed -n 's/^ *\([0-9][0-9, ]*\)$/\1/p' | tr -d ' ')
[ -n "$its" ] || fail "no /krylov_iterations in $dir/fidelity.h5"
q=0
for n in ${its//,/ }; do
  check_lines "$dir/fidelity.txt" "$q" "$n" || fail "infl fidelity's progress lines of query $q"
  q=$((q + 1))
done

# a signal during the deflation (210 Lanczos steps on the byte-level GPT-2) stops it at once with status 3 and a
# message saying where its progress is saved, instead of after all its steps: the signal is sent when the first
# step's line appears
"$mpi" --oversubscribe -n 2 "$exe" ihvp -model "$src/tests/ref/gpt2_bytes" -train "text:$src/tests/ref/gpt2_bytes_text.txt" \
  -query "text:$src/tests/ref/gpt2_bytes_text.txt" -query_indices 0 -ekfac_damping 1e-2 -progress_interval 0 \
  -out "$dir/signal.h5" >"$dir/signal.txt" 2>&1 &
pid=$!
until grep -q "Lanczos step 1 of 210" "$dir/signal.txt" || ! kill -0 $pid 2>/dev/null; do sleep 0.1; done
kill -USR1 $pid 2>/dev/null || true
set +e
wait $pid
rc=$?
set -e
[ "$rc" -eq 3 ] || { cat "$dir/signal.txt"; fail "ihvp signalled during the deflation exited with $rc, expected 3"; }
grep -q "ihvp (the Lanczos run of -ihvp_deflate) interrupted by a signal; its progress is saved in $dir/signal.h5.ihvp.partial" "$dir/signal.txt" || { cat "$dir/signal.txt"; fail "no message of the interrupted deflation"; }
grep -q "^ihvp: deflation: 210 Lanczos steps" "$dir/signal.txt" && fail "the deflation ran to its end after the signal"
echo "ok: a signal stops the deflation at once (status 3, after $(grep -c 'Lanczos step [0-9]* of 210' "$dir/signal.txt") progress lines)"

if out=$("$mpi" --oversubscribe -n 2 "$exe" ihvp "${solve[@]}" -progress_interval -1 -out "$dir/bad.h5" 2>&1); then fail "-progress_interval -1 was accepted"; fi
grep -q -- "-progress_interval -1.* must be a number of seconds >= 0" <<<"$out" || fail "-progress_interval -1: unclear message: $out"
[ ! -e "$dir/bad.h5" ] || fail "a failed run wrote $dir/bad.h5"
echo "ok: -progress_interval -1 fails naming the option"
echo "ihvp_progress.sh: all checks passed"
