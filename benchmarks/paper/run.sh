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
# Issue 30's and 25's remaining runs, most informative first: the seeds that pair
# e-SNLI's DSS and standard fine-tuning at 1/4 of the pool and ANLI-R1's modes, then
# SVAMP's 10-epoch runs, then e-SNLI's single-seed sizes and the human explanations'
# seeds 1-2 (the loop below runs whatever is left of every sweep).
esnli() { "$bin/stepdistill" sweep benchmarks/paper/esnli-curve.yaml --report benchmarks/paper/esnli/report "$@"; }
anli() { "$bin/stepdistill" sweep benchmarks/paper/anli1-ablation.yaml --report benchmarks/paper/anli1/report "$@"; }
for seed in 1 2; do
    esnli --only "esnli-standard-f0.25-*-s$seed" --only "esnli-dss-f0.25-*-s$seed"
    anli --only "*-s$seed"
done
"$bin/stepdistill" sweep benchmarks/paper/svamp-longer.yaml --report benchmarks/paper/svamp-longer/report
esnli --only '*-f0.5-*' --only 'esnli-dss-f1-*'
# Issue 7's sweeps (done), then issue 25's recipes and its quarter-data, longer-budget
# and CQA comparisons, then issue 30's e-SNLI and ANLI-R1.
for sweep in svamp-ablation svamp-curve svamp-unlabeled cqa-ablation cqa-unlabeled \
    svamp-recipes svamp-quarter svamp-longer cqa-recipes anli1-ablation esnli-curve; do
    case $sweep in
    svamp-recipes | svamp-quarter | svamp-longer | cqa-recipes)
        report=benchmarks/paper/$sweep/report ;;
    *) report=benchmarks/paper/${sweep%%-*}/report ;; # svamp-…: …/svamp, cqa-…: …/cqa, …
    esac
    "$bin/stepdistill" sweep "benchmarks/paper/$sweep.yaml" --report "$report"
done
