# tests/lib/kill_resume.sh -- sourced by the tests that kill a long stage at random points and rerun it until it
# finishes (tests/resume.sh, tests/lm_stages.sh, tests/store.sh) or at a chosen point (tests/lds_text.sh); needs EXE
# (the infl executable) and MPIEXEC.
#
# interrupted OUT ARGS...: run `infl ARGS -out OUT -checkpoint_interval 0` again and again, at 2, 3, 1, 2, ... ranks,
# until OUT exists:
#   - attempt 1 adds $KR_FIRST (default "-checkpoint_stop_after 3": it checkpoints and stops after 3 steps, so that a
#     checkpoint exists whatever the machine's speed; infl train takes "-train_stop_after N" instead);
#   - in attempts 2 .. $KR_KILLS (default 12) the ranks (the children of mpiexec; mpiexec itself, when signalled while
#     it starts them, could hang) are killed after a random delay of up to $KR_SLEEP seconds (default 3; RANDOM seeded
#     with $KR_SEED, default 4242) with SIGTERM (as Slurm sends it), every fourth attempt with SIGKILL;
#     an mpiexec left without ranks for 10 s (Open MPI can hang so under load) is killed with SIGKILL;
#   - later attempts run to the end (on a loaded machine no attempt may finish before its kill); at most $KR_TRIES
#     (default 40) attempts.
# Succeeds when OUT exists and at least one attempt resumed a checkpoint (printed "resuming").  Each attempt's output
# is in attempt.log of the working directory.
# kill_ranks PID SIG LOG: send SIG to the ranks of the mpiexec PID (its children, not mpiexec: a signalled mpiexec can
# hang); Open MPI's mpiexec can also hang once its ranks died of a signal (a rank hit before it installed its
# handlers): when it has had no rank for 10 s it is killed with SIGKILL, which LOG records.  The caller waits for PID.
kill_ranks() {
  local pid=$1 sig=$2 log=$3 idle=0
  pkill -"$sig" -P "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && [ $idle -lt 20 ]; do
    if pgrep -P "$pid" > /dev/null; then idle=0; else idle=$((idle + 1)); fi
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && { echo "mpiexec (pid $pid) hung after its ranks ended: killed" >> "$log"; kill -KILL "$pid"; }
  return 0
}
interrupted() {
  local out=$1; shift
  local tries=0 st resumed=0 first=${KR_FIRST--checkpoint_stop_after 3}
  RANDOM=${KR_SEED:-4242}
  while [ ! -f "$out" ] && [ $tries -lt "${KR_TRIES:-40}" ]; do
    tries=$((tries + 1))
    local np=$(( (tries % 3) + 1 )) sig=TERM extra=""
    [ $((tries % 4)) -eq 3 ] && sig=KILL
    [ $tries -eq 1 ] && extra=$first
    # shellcheck disable=SC2086
    $MPIEXEC --oversubscribe -n "$np" "$EXE" "$@" -out "$out" -checkpoint_interval 0 -progress_interval 1000 $extra > attempt.log 2>&1 &
    local pid=$!
    if [ $tries -gt 1 ] && [ $tries -le "${KR_KILLS:-12}" ]; then
      sleep "$(( RANDOM % ${KR_SLEEP:-3} )).$(( RANDOM % 9 + 1 ))"
      kill_ranks $pid $sig attempt.log
    fi
    wait $pid; st=$?
    grep -q "resuming" attempt.log && resumed=$((resumed + 1))
    case $st in 0|3) ;; *) [ $sig = KILL ] || grep -i error attempt.log | head -3 ;; esac
  done
  echo "$out: finished after $tries attempts, $resumed of them resumed a checkpoint"
  [ -f "$out" ] && [ $resumed -gt 0 ]
}
