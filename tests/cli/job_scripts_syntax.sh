#!/usr/bin/env bash
# bash -n of the batch-job scripts (Slurm, PBS, local) and a check of their requeue convention.
set -u
repo=${1:?usage: job_scripts_syntax.sh REPO}
fail=0
n=0 nslurm=0
for f in "$repo"/jobs/*.sh "$repo"/jobs/slurm/*.sbatch "$repo"/jobs/pbs/*.pbs; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  if bash -n "$f"; then echo "ok    $f"; else echo "FAIL  $f"; fail=1; fi
done
# an empty match (wrong REPO, scripts moved) must not pass as "nothing wrong"
[ $n -gt 0 ] || { echo "FAIL  no job script found under $repo/jobs"; fail=1; }
for f in "$repo"/jobs/slurm/*.sbatch; do
  [ -e "$f" ] || { echo "FAIL  no Slurm script found in $repo/jobs/slurm"; fail=1; continue; }
  nslurm=$((nslurm + 1))
  for want in '#SBATCH --requeue' '#SBATCH --signal=B:USR1@' 'scontrol requeue' 'trap '; do
    grep -q -- "$want" "$f" || { echo "FAIL  $f lacks \"$want\""; fail=1; }
  done
done
# the scripts run with stand-ins for srun / mpiexec (recording their working directory and arguments): the default
# output directory follows the options file's name (NAME.opts -> $INFL_HOME/NAME-out, so that two studies never share
# one), and the PBS job works in the submit directory (PBS starts it in $HOME), where relative paths of an options
# file are taken from, as under Slurm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/home/jobs" "$tmp/submit" "$tmp/elsewhere"
printf '#!/usr/bin/env bash\necho "$PWD $*" >> "%s/calls"\n' "$tmp" > "$tmp/bin/srun"
cp "$tmp/bin/srun" "$tmp/bin/mpiexec"
chmod +x "$tmp/bin/srun" "$tmp/bin/mpiexec"
stub_run() { # NAME SCRIPT VAR=VALUE...: run SCRIPT from $tmp/elsewhere with the stand-ins; expects one call
  local name=$1 script=$2
  shift 2
  : > "$tmp/calls"
  (cd "$tmp/elsewhere" && env PATH="$tmp/bin:$PATH" INFL_HOME="$tmp/home" INFL=/bin/true "$@" bash "$script" > "$tmp/out" 2>&1)
  [ "$(wc -l < "$tmp/calls")" -eq 1 ] || { echo "FAIL  $name: expected one launch, got: $(cat "$tmp/calls") $(cat "$tmp/out")"; fail=1; return 1; }
}
expect_call() { # NAME REGEX
  grep -Eq -- "$2" "$tmp/calls" && echo "ok    $1" || { echo "FAIL  $1: launch \"$(cat "$tmp/calls")\" does not match /$2/"; fail=1; }
}
for f in "$repo"/jobs/slurm/*.sbatch; do
  stub_run "$f default" "$f" SLURM_JOB_ID=1 && expect_call "$f: default -outdir \$INFL_HOME/fashion-mnist-out" " -outdir $tmp/home/fashion-mnist-out\$"
  stub_run "$f OPTS" "$f" SLURM_JOB_ID=1 OPTS="$tmp/home/jobs/fortunes.opts" && expect_call "$f: OPTS=.../fortunes.opts -> -outdir \$INFL_HOME/fortunes-out" "^$tmp/elsewhere .* -options_file $tmp/home/jobs/fortunes.opts -outdir $tmp/home/fortunes-out\$"
done
for f in "$repo"/jobs/pbs/*.pbs; do
  stub_run "$f default" "$f" PBS_O_WORKDIR="$tmp/submit" && expect_call "$f: default -outdir \$INFL_HOME/fashion-mnist-out" " -outdir $tmp/home/fashion-mnist-out\$"
  stub_run "$f OPTS" "$f" PBS_O_WORKDIR="$tmp/submit" OPTS=jobs/fortunes.opts && expect_call "$f: runs in \$PBS_O_WORKDIR, OPTS=jobs/fortunes.opts -> -outdir \$INFL_HOME/fortunes-out" "^$tmp/submit .* -options_file jobs/fortunes.opts -outdir $tmp/home/fortunes-out\$"
done
[ $fail -eq 0 ] && echo "job_scripts_syntax.sh: $n scripts parse, $nslurm Slurm scripts follow the requeue convention"
exit $fail
