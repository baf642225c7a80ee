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
# sweep NAME [--only PATTERN ...]: benchmarks/paper/NAME.yaml, its report rewritten after
# every run.
sweep() {
    local name=$1 report
    shift
    case $name in
    svamp-recipes | svamp-quarter | svamp-longer | cqa-recipes)
        report=benchmarks/paper/$name/report ;;
    *) report=benchmarks/paper/${name%%-*}/report ;; # svamp-…: …/svamp, cqa-…: …/cqa, …
    esac
    "$bin/stepdistill" sweep "benchmarks/paper/$name.yaml" --report "$report" "$@"
}
# Issue 30's and 25's runs, most informative first (those not yet in a results file were
# left out for cost on 2-core CPUs; benchmarks/paper/README.md says which): seeds 1-2 of
# the three ANLI-R1 modes that issue 30 asks three seeds of (standard, DSS, single-task),
# then the third seed that pairs e-SNLI's DSS and standard fine-tuning at 1/4 of the pool, a
# second seed of ANLI-R1's DSS on human reasons, SVAMP's 10-epoch runs, e-SNLI's
# single-seed sizes, and last the human explanations' and reasons' remaining seeds (the
# loop below runs whatever is left of every sweep).
for seed in 1 2; do
    sweep anli1-ablation --only "anli1-standard-*-s$seed" --only "anli1-dss-f1-*-s$seed" \
        --only "anli1-single-*-s$seed"
done
sweep esnli-curve --only 'esnli-standard-f0.25-*-s2' --only 'esnli-dss-f0.25-*-s2'
sweep anli1-ablation --only 'anli1-dss-human-*-s1'
sweep svamp-longer
sweep esnli-curve --only '*-f0.5-*' --only 'esnli-dss-f1-*'
# Issue 7's sweeps (done), then issue 25's recipes and its quarter-data, longer-budget
# and CQA comparisons, then issue 30's e-SNLI and ANLI-R1.
for name in svamp-ablation svamp-curve svamp-unlabeled cqa-ablation cqa-unlabeled \
    svamp-recipes svamp-quarter svamp-longer cqa-recipes anli1-ablation esnli-curve; do
    sweep "$name"
done
