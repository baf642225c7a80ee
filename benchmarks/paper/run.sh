#!/usr/bin/env bash
# Issue 7: every run of the paper-scale experiments, in priority order, each sweep
# rewriting its task's report after every run. Resumable: each sweep skips runs already
# in its results file, so after a kill (or at the start of a new session) run this
# again. Long (hours on 2 CPU cores): run it as
#   nohup benchmarks/paper/run.sh > benchmarks/paper/run.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
bin=.venv/bin
# Issue 25's recipes read a second teacher's rationales too (Llama-3, replayed).
"$bin/stepdistill" annotate --task svamp-llama3 > /dev/null
for sweep in svamp-ablation svamp-curve svamp-unlabeled cqa-ablation cqa-unlabeled svamp-recipes; do
    report=benchmarks/paper/${sweep%%-*}/report # svamp-… and cqa-… sweeps: …/svamp, …/cqa
    [ "$sweep" = svamp-recipes ] && report=benchmarks/paper/svamp-recipes/report
    "$bin/stepdistill" sweep "benchmarks/paper/$sweep.yaml" --report "$report"
done
