#!/usr/bin/env bash
# Every GPU check of the project in one short run (under 9 minutes: the step limits add up to 540 s; on the H200 of
# 4 Dec 2026 the steps then present took 7.5 min): the device tests (tests/gpu), then the GPU figures of issues 2, 5,
# 7, 8 and 20 (bench_traffic also counts kernels and host syncs per step).
#
#   bash benchmarks/gpu_check.sh            # output in ./gpu_out (or $OUT when set)
#
# On a machine without mesa/hydra/optuna, put wheels in .whl/ first (see ../shared/wheels-gpu-py312);
# they are installed into /tmp/site. Each step has its own time limit, so one slow step cannot eat
# the others' time; a step that runs out prints "TIMEOUT" and the script goes on.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}
export PYTHONUNBUFFERED=1  # each line reaches $OUT as printed: a step cut by its time limit keeps what it measured

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to the terminal and $OUT/NAME.txt
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee "$OUT/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    [ "${PIPESTATUS[0]}" = 124 ] && echo "TIMEOUT after ${limit}s" | tee -a "$OUT/$name.txt"
}

{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } \
    > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
step tests 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu
# issue 2: vehicle updates/s over a batch of worlds (target 1 G on one H100), eager and fused
step traffic 80 python3 benchmarks/bench_traffic.py --device cuda --worlds 1 256 --steps 20
# issue 20 item 2: the same without the fixed-shape mode (nonzero index subsets): what the syncs it removes cost
step traffic_subsets 30 python3 benchmarks/bench_traffic.py --device cuda --worlds 256 --steps 20 --target 5000 --fixed-shape false
step traffic_compile 60 python3 benchmarks/bench_traffic.py --device cuda --worlds 128 --steps 20 --compile
# issue 5: candidate evaluations/min, R=8 replications of one hour of the arterial (target 1,000)
step search 50 python3 benchmarks/bench_search.py --device cuda --batch 256 --single 1
# issue 7: particle-steps/s over a batch of worlds (target 100 M); issue 20 item 5: the LJ liquid at N = 64k
# (target >= 1.4e8 particle-steps/s; Verlet lists, the step compiled by inductor: the compile is in the first 20 steps)
step molecular 70 python3 benchmarks/bench_molecular.py --gpu --steps 300 --repeat 1 --worlds 1 64
# issue 20 item 3: building 1024 worlds of scenario=traffic and reading their outcomes (targets: <= 2 s each)
step build 40 python3 benchmarks/bench_build.py --device cuda --worlds 256 1024 --repeat 1
# issue 8: the planner's chunk size against hand-picked ones (within 20 % of the best)
step compute 30 python3 benchmarks/bench_compute.py --device cuda --quick --no-ray --repeat 1
# issue 20: one world of a million vehicles (a 100 x 100 grid; target >= 5e8 updates/s), and the CLI at 1024 worlds
# (target <= 15 s wall; 96 s on 4 Dec)
step traffic_1m 50 python3 benchmarks/bench_traffic.py --device cuda --worlds 1 --grid 100 --target 1000000 \
    --steps 10 --count-steps 2
step cli 70 bash -c "time python3 -m twins run scenario=traffic compute.device=cuda replications=1024 \
    output.figures=false progress=false hydra.run.dir=$OUT/cli1024"
echo "done $(date -u +%H:%M:%S); figures in $OUT/"
