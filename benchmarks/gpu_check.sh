#!/usr/bin/env bash
# One command for a GPU machine: the device test tier and the GPU benchmark, numbers to files.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# Needs only this repository and a python3 that has torch with CUDA (the device machines' image
# has torch, numba, numpy, scipy, pytest, torchdiffeq, tqdm, matplotlib and scikit-learn). A
# package missing there can be carried as wheels in .whl/ (see docs/benchmarks.md, "GPU"): they
# are installed with pip --no-index into /tmp/site first. Nothing is fetched from the network.
#
# Writes to $OUT if set (the device tool's output folder), else dynopt-out/gpu/:
#   summary.txt          GPU, versions, test counts, the benchmark's verdict line, timings
#   device_tests.log     pytest tests/test_device.py --device cuda -v: one line per test as it runs
#                        (a test the timeout killed is the last line, without an outcome), the
#                        reasons of failures and skips (-rfEs) and the 20 slowest tests
#   device_tests.xml     the same as JUnit XML
#   gpu_bench.md/.json   benchmarks/gpu.py --device cuda --size full (tables; raw numbers)
#   gpu_bench.log        its output
# Budget: at most 150 s for the tests and 100 s for the benchmark (each under its own timeout;
# TEST_TIMEOUT, BENCH_TIMEOUT override them), so the whole run ends within 5 minutes including
# the wheel install: call it with the device tool's timeout_s=330 (a 15-minute device budget
# holds the machine's start, this call, and a short rerun of what failed; docs/benchmarks.md).
# A dry run anywhere: DEVICE=cpu SIZE=small bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUTDIR=${OUT:-$ROOT/dynopt-out/gpu}
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-full}
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-100}
export PYTHONUNBUFFERED=1
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/dynopt-numba-cache}
start=$(date +%s)
summary="$OUTDIR/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    note "installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { note "wheel install FAILED"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

missing=$("$PY" - <<'EOF'
import importlib
need = ["torch", "numpy", "scipy", "numba", "pytest", "torchdiffeq", "tqdm", "matplotlib",
        "sklearn"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
    note "missing Python packages: $missing (carry them as wheels in .whl/, see docs/benchmarks.md)"
    exit 1
fi
"$PY" - <<'EOF' | tee -a "$summary"
import platform, torch, numba
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE"
print(f"GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); numba {numba.__version__}; "
      f"Python {platform.python_version()}")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader | sed 's/^/nvidia-smi: /' | tee -a "$summary"

note "--- device tier: pytest tests/test_device.py --device $DEVICE"
t0=$(date +%s)
log="$OUTDIR/device_tests.log"
timeout -k 10 "$TEST_TIMEOUT" "$PY" -m pytest tests/test_device.py --device "$DEVICE" -v -rfEs \
    --durations=20 -p no:cacheprovider --junitxml="$OUTDIR/device_tests.xml" > "$log" 2>&1
test_rc=$?
if [ $test_rc -eq 124 ] || [ $test_rc -eq 137 ]; then  # -v named each test as it started
    last=$(grep 'tests/test_device.py::' "$log" | tail -n 1 | sed 's/ *$//')
    note "pytest KILLED by the $TEST_TIMEOUT s timeout while running $last" \
        "($(grep -c ' PASSED' "$log") passed, $(grep -cE ' (FAILED|ERROR)' "$log") failed before it)"
else
    note "pytest exit code $test_rc ($(( $(date +%s) - t0 )) s): $(tail -n 1 "$log")"
fi

note "--- benchmark: benchmarks/gpu.py --device $DEVICE --size $SIZE"
t0=$(date +%s)
timeout -k 10 "$BENCH_TIMEOUT" "$PY" benchmarks/gpu.py --device "$DEVICE" --size "$SIZE" --out "$OUTDIR/gpu_bench.md" \
    > "$OUTDIR/gpu_bench.log" 2>&1
bench_rc=$?
if [ $bench_rc -eq 124 ] || [ $bench_rc -eq 137 ]; then
    note "benchmark KILLED by the $BENCH_TIMEOUT s timeout (gpu_bench.log has what it printed)"
fi
note "benchmark exit code $bench_rc ($(( $(date +%s) - t0 )) s): $(grep -E '^Langevin step' "$OUTDIR/gpu_bench.log" || tail -n 1 "$OUTDIR/gpu_bench.log")"
note "total $(( $(date +%s) - start )) s; files in $OUTDIR"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ]
