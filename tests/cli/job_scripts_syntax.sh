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
[ $fail -eq 0 ] && echo "job_scripts_syntax.sh: $n scripts parse, $nslurm Slurm scripts follow the requeue convention"
exit $fail
