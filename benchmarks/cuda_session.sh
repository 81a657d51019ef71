#!/usr/bin/env bash
# The CUDA checks the issues name, prepared to run in one call on a lent GPU machine (the device
# tool: at most 10 minutes a call, 15 minutes of device time a session, start included).
#
#   bash benchmarks/cuda_session.sh prepare
#       here, with the package registry: wheels of what the GPU machine lacks into .whl/, MNIST
#       from the data mirror (PYROVAE_DATA_MIRROR, else ../shared/data) into .gpu_data/
#   device tool: run(command="bash benchmarks/cuda_session.sh device",
#                    carry=[".whl", ".gpu_data"], timeout_s=600)
#       there, in order, each step with its own time limit so that the whole ends inside 9.5
#       minutes: CUDA graphs' test; two epochs of configs/burda_iwae_k50.yaml with the
#       compiled engine, without and (where the test passed) with train.cuda_graphs: the
#       second epoch's seconds say whether graphs help, and the faster sets the cosine's
#       epochs; the time-to-nats run of that config for the minutes left, its marks measured
#       on all 10,000 test images (IWAE-5000); the other tests marked `cuda` in what is left.
#       (The full speed table, `benchmarks/run.py --devices cuda`, does not fit beside them.)
#   bash benchmarks/cuda_session.sh device --dry-run
#       every step on the CPU with tiny budgets: a check of this script, not a measurement.
#
# What comes back ($OUT there; ./cuda_out without it): log.txt (everything), pytest_cuda.txt,
# cuda_graphs_epoch.json and reproduce_burda_iwae_k50_cuda.json. Copy the JSONs into
# benchmarks/results/, draw the curve (`reproduce.py plot`) and record the numbers with this
# command in BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

# What the GPU machine's image lacks of pyrovae's dependencies (the device tool's KINDS.md lists
# what it has), at the versions CI installs.
WHEELS="pyro-ppl==1.9.2 pyro-api==0.1.2 arviz==0.23.4 xarray-einstats==0.9.1 h5netcdf==1.8.2
        platformdirs==4.14.9 omegaconf==2.4.0"
BUDGET=${CUDA_SESSION_SECONDS:-570}  # the whole device step, under the call's 600 s

prepare() {
    local mirror=${PYROVAE_DATA_MIRROR:-../shared/data}
    mkdir -p .whl .gpu_data/MNIST/raw
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS || exit 1
    cp "$mirror"/MNIST/raw/*.gz .gpu_data/MNIST/raw/ || exit 1
    du -sh .whl .gpu_data
    echo "now: the device tool's run with command \"bash benchmarks/cuda_session.sh device\"," \
         "carry [\".whl\", \".gpu_data\"], timeout_s 600"
}

left() {  # seconds left of the budget, less a margin
    echo $((BUDGET - SECONDS - ${1:-0}))
}

device() {
    local dry=${1:-}
    local out=${OUT:-$PWD/cuda_out}
    mkdir -p "$out"
    exec > >(tee "$out/log.txt") 2>&1
    if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target runs/cuda_session/site .whl/*.whl || exit 1
        export PYTHONPATH=$PWD/runs/cuda_session/site:$PWD
    else
        export PYTHONPATH=$PWD
    fi
    export PYTHONUNBUFFERED=1 PYROVAE_DATA_MIRROR=${PYROVAE_DATA_MIRROR:-$PWD/.gpu_data}
    local dev=cuda cap=9 images=10000 samples=5000 limit=() probe_limit=90
    if [ "$dry" = "--dry-run" ]; then  # a CPU compiles slower: the probe gets longer
        dev=cpu cap=0.3 images=100 samples=20 limit=(data.limit=2000) probe_limit=240
        BUDGET=900
    fi
    nvidia-smi -L 2>/dev/null
    python3 -c "import torch, pyro, arviz, omegaconf; print('torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(), \
'pyro', pyro.__version__, 'arviz', arviz.__version__)" || exit 1

    echo "== $(date -u +%T) CUDA graphs' test ($(left) s left)"
    local graphs=(false)
    timeout 75 python3 -m pytest -q -m cuda tests/test_optim.py -k cuda_graphs 2>&1 \
        | tee "$out/pytest_cuda.txt" | tail -3
    if grep -q " passed" "$out/pytest_cuda.txt" && [ "$dev" = cuda ]; then
        graphs=(false true)
    fi

    # The seconds of the second epoch (the first compiles) of burda_iwae_k50, without and with
    # CUDA graphs: the measure of where they help, and what sets the cosine's epochs below.
    local g best=false per_epoch="" seconds
    declare -A epoch_seconds
    for g in "${graphs[@]}"; do
        echo "== $(date -u +%T) probe, train.cuda_graphs=$g ($(left) s left)"
        rm -rf "runs/cuda_session/probe_$g"
        timeout "$probe_limit" python3 -m pyrovae.fit --config configs/burda_iwae_k50.yaml train.epochs=2 \
            "train.device=$dev" train.engine=compiled "train.cuda_graphs=$g" \
            train.progress=false "run_dir=runs/cuda_session/probe_$g" "${limit[@]}" | tail -1
        seconds=$(tail -1 "runs/cuda_session/probe_$g/version_0/metrics.csv" 2>/dev/null \
                  | awk -F, '$1 == 2 {print $NF}')
        [ -n "$seconds" ] || continue
        epoch_seconds[$g]=$seconds
        echo "an epoch with train.cuda_graphs=$g: $seconds s"
        if [ -z "$per_epoch" ] || python3 -c "import sys; sys.exit(not $seconds < $per_epoch)"
        then
            per_epoch=$seconds best=$g
        fi
    done
    if [ -n "$per_epoch" ]; then
        printf '{"seconds_per_epoch": {%s}}\n' "$(for g in "${!epoch_seconds[@]}"; do
            printf '"cuda_graphs=%s": %s, ' "$g" "${epoch_seconds[$g]}"; done | sed 's/, $//')" \
            > "$out/cuda_graphs_epoch.json"
        time_to_nats "$best" "$per_epoch"
    else  # the tests below say what failed
        echo "error: no probe finished an epoch after its first; no time-to-nats run"
    fi

    echo "== $(date -u +%T) the other tests marked cuda ($(left) s left)"
    timeout "$(left 5)" python3 -m pytest -q -rA -m cuda tests/test_optim.py tests/test_fit.py \
        tests/test_check.py tests/test_data_splits.py --deselect \
        tests/test_optim.py::test_cuda_graphs_draw_fresh_noise_and_train_like_the_compiled_step \
        2>&1 | tee -a "$out/pytest_cuda.txt" | tail -5
    echo "== $(date -u +%T) done ($(left) s left)"
}

time_to_nats() {  # the cosine of burda_iwae_k50 over the minutes left (engine compiled)
    local best=$1 per_epoch=$2 compile minutes epochs marks
    # the first epoch's extra seconds (compiling) in the probe: the run pays them again
    compile=$(awk -F, 'NR == 2 {first = $NF} NR == 3 {print first - $NF}' \
              "runs/cuda_session/probe_$best/version_0/metrics.csv")
    # training minutes: what is left after ~110 s for the other tests, less ~45 s to start,
    # load and write, and the per-epoch validation and the marks' measurements (~10% more)
    minutes=$(python3 -c "print(round(max(0.2, min($cap, ($(left 110) - 45) / 60 / 1.1)), 1))")
    epochs=$(python3 -c "print(max(2, int(($minutes * 60 - max(0, ${compile:-0})) / $per_epoch)))")
    marks=$(python3 -c "m = $minutes; print(*sorted({round(m * f, 1) for f in (0.25, 0.5, 1)}))")
    echo "== $(date -u +%T) time to nats, IWAE k = 50, train.cuda_graphs=$best: the cosine" \
         "over $epochs epochs in $minutes minutes ($(left) s left)"
    local sets=(--set "train.device=$dev" --set train.engine=compiled
                --set "train.cuda_graphs=$best" --set train.schedule=cosine --set train.lr=2e-3
                --set "train.epochs=$epochs")
    local l
    for l in "${limit[@]}"; do sets+=(--set "$l"); done
    # shellcheck disable=SC2086
    timeout "$(left 100)" python3 benchmarks/reproduce.py run \
        --config configs/burda_iwae_k50.yaml --clock wall --minutes "$minutes" --eval-at $marks \
        --images "$images" --iwae-samples "$samples" "${sets[@]}" \
        --run-dir runs/cuda_session/k50 --json "$out/reproduce_burda_iwae_k50_cuda.json"
}

case "${1:-}" in
    prepare) prepare ;;
    device) device "${2:-}" ;;
    *) echo "usage: bash benchmarks/cuda_session.sh prepare | device [--dry-run]" >&2; exit 2 ;;
esac
