#!/usr/bin/env bash
# The GPU check: the GPU-marked tests and the GPU speed table, in under 8 minutes.
#
#   benchmarks/gpu_check.sh              # on a machine with a GPU, from anywhere in the checkout
#   benchmarks/gpu_check.sh --cpu-smoke  # the same steps on the CPU, to check the script itself
#
# Needs a Python that imports this checkout's hooklab with the test extra (pytest, beartype;
# e.g. `pip install -e ".[test]"`) and a CUDA build of torch: `python` on PATH, or $PYTHON.
# Runs offline: the tests build tiny models from configs, the speed table a random
# GPT-2-small-shaped model (benchmarks/gpu_speed.py); nothing is downloaded.
#
# Steps (each under `timeout`, together at most 470 s):
#   1. the GPU: nvidia-smi's line and torch's view (version, CUDA, devices);
#   2. `pytest -m gpu tests` (tests/test_gpu.py: a model sharded across the visible GPUs, or
#      across cuda:0 and CPU memory with one GPU (Accelerate's CPU offload), equals the
#      unsharded one for every method, step score, PECoRe and value zeroing; CUDA equals CPU
#      within atol 1e-4, rtol 1e-3), 290 s;
#   3. `python benchmarks/gpu_speed.py --device cuda:0`: the speed table, 160 s.
# Exit status: 0 when every step passed, and when there is no GPU (it says so and runs
# nothing); otherwise the status of the first step that failed (124: ran past its limit).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
smoke=0
case "${1:-}" in
    --cpu-smoke) smoke=1 ;;
    "") ;;
    *) echo "usage: $0 [--cpu-smoke]" >&2; exit 2 ;;
esac
start=$SECONDS

echo "== 1. device"
command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi \
    --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
timeout 60 "$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}; "
      f"cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB")
raise SystemExit(0 if torch.cuda.is_available() else 3)
EOF
rc=$?
if [ $rc -eq 3 ] && [ $smoke -eq 0 ]; then
    echo "gpu_check: no GPU here (torch.cuda.is_available() is False): nothing run."
    echo "gpu_check: run it on a machine with a GPU, or pass --cpu-smoke to try the steps."
    exit 0
elif [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
    echo "gpu_check: cannot import torch with $PYTHON (status $rc)." >&2
    exit $rc
fi
device=cuda:0
speed_flags=()
if [ $smoke -eq 1 ]; then
    device=cpu
    speed_flags=(--quick)
    echo "(--cpu-smoke: the GPU tests skip without CUDA; the speed table runs --quick on the CPU)"
fi

echo "== 2. GPU-marked tests"
timeout 290 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -rs --durations=5 tests
tests_rc=$?

echo "== 3. speed table on $device"
timeout 160 "$PYTHON" benchmarks/gpu_speed.py --device "$device" ${speed_flags[@]+"${speed_flags[@]}"}
speed_rc=$?

echo "gpu_check: tests status $tests_rc, speed table status $speed_rc," \
    "$((SECONDS - start)) s in all"
[ $tests_rc -ne 0 ] && exit $tests_rc
exit $speed_rc
