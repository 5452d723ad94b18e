#!/usr/bin/env bash
# bash -n of the batch-job scripts (Slurm, PBS, local) and a check of their requeue convention.
set -u
repo=${1:?usage: job_scripts_syntax.sh REPO}
fail=0
for f in "$repo"/jobs/*.sh "$repo"/jobs/slurm/*.sbatch "$repo"/jobs/pbs/*.pbs; do
  [ -e "$f" ] || continue
  if bash -n "$f"; then echo "ok    $f"; else echo "FAIL  $f"; fail=1; fi
done
for f in "$repo"/jobs/slurm/*.sbatch; do
  for want in '#SBATCH --requeue' '#SBATCH --signal=B:USR1@' 'scontrol requeue' 'trap '; do
    grep -q -- "$want" "$f" || { echo "FAIL  $f lacks \"$want\""; fail=1; }
  done
done
exit $fail
