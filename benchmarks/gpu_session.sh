#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in two device calls (each < 10 min):
#
#   here:    git rev-parse HEAD > .gpu-commit   (the device copy has no .git; pass carry=[".gpu-commit"])
#   call 1:  bash benchmarks/gpu_session.sh tests       build, whole suite on the GPU, sanitizers
#   call 2:  bash benchmarks/gpu_session.sh bench       build, swav-bench on every DESIGN §5 shape
#
# Results land in $OUT (the device tool copies them back); commit them under
# benchmarks/results/<date>-<device>/ with the commit recorded in env.txt.
# The device image has torch, triton, cmake and pybind11 but no network: build without isolation.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1

{
  echo "commit: $(cat .gpu-commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -1
} > "$OUT/env.txt" 2>&1

SWAV_KERNELS_BUILD_CUDA=1 SWAV_KERNELS_CUDA_ARCHS="${SWAV_KERNELS_CUDA_ARCHS:-90}" \
  python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
python3 -m swav_kernels.info >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

case "${1:-tests}" in
  tests)
    timeout 420 python3 -m pytest -q -rs -p no:cacheprovider -x --junitxml="$OUT/gpu-tests.xml" tests \
      > "$OUT/gpu-tests.txt" 2>&1
    echo "pytest exit code: $?" >> "$OUT/gpu-tests.txt"
    tail -15 "$OUT/gpu-tests.txt"
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # one allocation per tensor: memcheck sees every overrun
    for tool in memcheck racecheck synccheck; do
      timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 1 \
        python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda_kernels.py -k "shape1 and float16" \
        > "$OUT/sanitizer-$tool.txt" 2>&1
      echo "compute-sanitizer $tool exit code: $?" | tee -a "$OUT/sanitizer-$tool.txt"
    done
    ;;
  bench)
    timeout 540 python3 -m swav_kernels.bench --out "$OUT/bench" --budget-s 480 > "$OUT/bench-stdout.txt" 2> "$OUT/bench-progress.log"
    echo "swav-bench exit code: $?"
    tail -40 "$OUT/bench-stdout.txt"
    ;;
  *)
    echo "usage: $0 tests|bench" >&2; exit 2 ;;
esac
