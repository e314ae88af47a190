#!/usr/bin/env bash
# The GPU checks in one call of a few minutes, on a machine that has only a Python with a CUDA
# torch (numpy, Pillow, torchvision beside it) and this working tree: no venv, no network.
#
#   bash tools/gpu_run.sh            # results under $OUT when set, else reports/gpu_run/
#   PYTHON=.venv/bin/python DEVICE=cpu GPU_CHECK_ARGS="--batch-sizes 1 --precisions fp32" bash tools/gpu_run.sh
#                                    # its dry run here: the gpu tests skip, gpu-check runs small
#
# 1. environment.txt: Python, torch, its CUDA, the driver, the GPU (or why torch sees none);
# 2. the `gpu` tests of tests/test_gpu.py through pytest, when that Python has it (--noconftest:
#    tests/conftest.py needs the venv's server packages; these tests need none of them);
# 3. gpu-check on CUDA: model.pt (traced here from random weights: it is not in the tree) against
#    the CPU, the strict FP32 trace, FP16, the selection a GPU instance of ssd300_postprocess
#    serves against the CPU one, and the forward and selection figures.
# Steps 2 and 3 check the same properties (gpu-check's parity rows are verdicts), so without
# pytest step 3 still checks them all. Exit status: 0 when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${OUT:-reports/gpu_run}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD/common:$PWD/build:$PWD/serving:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
status=0

{
  "$PYTHON" - <<'EOF'
import platform, torch
from load_tests.benchmark.cuda_diagnosis import driver_cuda_version, why_no_cuda
print("python", platform.python_version(), "| torch", torch.__version__, "| built for CUDA", torch.version.cuda)
driver = driver_cuda_version()
print("driver supports CUDA", f"{driver // 1000}.{driver % 1000 // 10}" if driver else None)
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0))
else:
    print("no usable GPU:", why_no_cuda())
EOF
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PYTHON" -c "import pytest; print('pytest', pytest.__version__)" 2>&1 || echo "pytest: not installed"
} | tee "$RESULTS/environment.txt"

if "$PYTHON" -c "import pytest" 2>/dev/null; then
  timeout 200 "$PYTHON" -m pytest --noconftest -p no:cacheprovider -m gpu -v -rs tests/test_gpu.py \
    --junitxml="$RESULTS/gpu_tests.xml" 2>&1 | tee "$RESULTS/gpu_tests.log"
  tests=${PIPESTATUS[0]}
else
  echo "pytest is not installed here: tests/test_gpu.py did not run (gpu-check below)" | tee "$RESULTS/gpu_tests.log"
  tests=skipped
fi

# shellcheck disable=SC2086 # GPU_CHECK_ARGS is a list of arguments
timeout 270 "$PYTHON" -m load_tests.benchmark.gpu_check --device "${DEVICE:-cuda}" --out "$RESULTS/gpu_check" \
  ${GPU_CHECK_ARGS:-} 2>&1 | tee "$RESULTS/gpu_check.log"
check=${PIPESTATUS[0]}

for result in "$tests" "$check"; do
  [[ $result == 0 || $result == skipped ]] || status=1
done
echo "gpu tests: $tests, gpu-check: $check (exit statuses; 124 = timed out)" | tee "$RESULTS/summary.txt"
exit "$status"
