#!/usr/bin/env bash
# What a session with a lent GPU runs, prepared and dry-run on a CPU first (the GPU time is
# minutes, so this script must be right the first time).
#
#   bash benchmarks/gpu_session.sh quick   ONE device call: this script's own work ends within 240 s
#                                          (call it with timeout_s=270 or more; the machine's start,
#                                          60-120 s, comes before and is not counted in timeout_s).
#       One phase after another, each with its own time limit (QUICK_SCHEDULE below), so that no
#       step competes with another for the GPU or the CPUs when it is timed:
#       build the CUDA extension; the GPU tests of the Triton kernels and backend
#       (SEL_QUICK_KERNEL_TESTS, -n 12: 97 s on an H200), alone; swav-bench fwd+bwd on tiny,
#       swav-1gpu and large-k in bf16 (the DESIGN §5a targets; every peer but
#       reference-compiled, whose compile time the budget cannot carry: plain-compiled, the figure to
#       beat, is measured; cases that do not fit its --budget-s are recorded as skipped); then side by
#       side: compute-sanitizer memcheck and synccheck on CUDA kernel tests and the CUDA loss
#       (SEL_SANITIZER), racecheck and initcheck, the heavy ones, on one test per CUDA kernel
#       (SEL_SANITIZER_HEAVY), one epoch of swav-train on the GPU (AMP, channels_last), and a
#       2-process torchrun of it (SyncBatchNorm, NCCL) where the machine has >= 2 GPUs.
#   bash benchmarks/gpu_session.sh tests   (one call, < 10 min) build, the whole suite, the four
#       sanitizers on a wider selection, the trainer runs.
#   bash benchmarks/gpu_session.sh bench   (one call, < 10 min) build, swav-bench on every DESIGN §5 shape.
#   bash benchmarks/gpu_session.sh selections   print every pytest selection this script makes, one per
#       line (name, then its arguments, tab-separated): tests/test_gpu_session_script.py collects each.
#   bash benchmarks/gpu_session.sh schedule     print the quick mode's budget and each phase's limit and
#       floor (seconds): tests/test_gpu_session_script.py checks that they fit the call.
#   bash benchmarks/gpu_session.sh commit       print the commit this script records and where it came from.
#   --dry-run (or GPU_SESSION_DRY_RUN=1): the whole mode on a CPU with its schedule scaled to a 110 s
#       budget: no build, pytest selections collected (not run), GPU-only tools skipped, swav-bench on
#       `tiny` and a tiny swav-train on the CPU. tests/test_gpu_session_script.py runs `quick --dry-run`.
#
# How to call it with the device tool, from the checkout the session was started in:
#   here:   git rev-parse HEAD > .gpu-commit     (the device copy has no .git; .gpu-commit is git-ignored,
#                                                 so it travels only when carried)
#   run:    command="bash benchmarks/gpu_session.sh quick", carry=[".gpu-commit"], timeout_s=270
#           (the script stops itself after 240 s; tests / bench modes: timeout_s=600)
# The commit recorded (summary.txt, env.txt, swav-bench's results.json) is that of a git checkout whose
# top level is this project, else the one in .gpu-commit, else "none": never that of a repository
# that merely encloses the copy.
#
# What lands where: the device tool returns at most 8 files from $OUT, at most 2 folders deep, named
# only [A-Za-z0-9._-]. So everything is packed into these files in $OUT (written as the steps finish,
# so a call killed at its limit still returns what was done):
#   summary.txt    one line per step: status (pass | FAIL | timeout | unavailable | skipped), exit code,
#                  seconds, when it started (seconds into the run), its time limit, a note (pytest
#                  tally, sanitizer error summary, why unavailable or skipped)
#   env.txt        the command, commit and its source, date, GPU, driver, python/torch/triton/CUDA/nvcc
#                  versions, swav_kernels.info after the build
#   table.txt      swav-bench's table, its conventions, the matmul peak and the target lines
#   results.json   swav-bench's raw results (every sample)
#   logs.tar.gz    every log: build, pytest (with junit XML), sanitizers, swav-train (with its CSV
#                  log, loss curve and summary), swav-bench progress
# A tool the machine lacks or refuses (compute-sanitizer missing, "Device not supported") is recorded
# as `unavailable`, never as a pass; a pytest selection that collects nothing fails its step.
# Commit the files under benchmarks/results/<date>-<gpu>/ (e.g. 2026-12-01-h200/, logs.tar.gz unpacked)
# with a README.md that names the commit, the versions (env.txt) and this exact command.
#
# The device image has torch, triton, nvcc, cmake, pybind11, pytest-xdist and pytest-timeout but no
# network: the extension is built without build isolation. Environment knobs: OUT (default
# ./gpu-results), PYTHON (python3), GPU_SESSION_BUDGET_S (the mode's own time budget),
# SWAV_KERNELS_CUDA_ARCHS (90).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

MODE=quick
DRY=${GPU_SESSION_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    quick|tests|bench|selections|schedule|commit) MODE=$arg ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "usage: $0 [quick|tests|bench|selections|schedule|commit] [--dry-run]" >&2; exit 2 ;;
  esac
done
[[ "$DRY" == "0" || -z "$DRY" ]] && DRY=0 || DRY=1

# ---- pytest selections: every pytest run below uses one of these arrays, nothing else ----------------
# (files + -k on parameter ids that exist; tests/test_gpu_session_script.py collects each on a CPU and
# asserts it selects >= 1 test, and every step re-checks that before it runs)
SEL_KERNEL_TESTS=(tests/test_triton_*.py tests/test_cuda_*.py)
# quick mode: the Triton kernels and backend (97 s on the H200 with -n 12, collection included; the CUDA
# kernels run in the sanitizer steps): with the CUDA tests the phase overran its 75 s (b05a185)
SEL_QUICK_KERNEL_TESTS=(tests/test_triton_kernels.py tests/test_triton_backend.py)
# every CUDA kernel on shapes ragged against its blocking (bf16; the scaling in fp32), plus the CUDA loss end to end
SEL_SANITIZER=(tests/test_cuda_kernels.py tests/test_cuda_loss.py
               -k "(bf16 and ragged) or ragged_scale or paths_are_bitwise_reproducible")
# racecheck and initcheck (initcheck alone overran 161 s on SEL_SANITIZER beside the other steps): one
# bf16 test per CUDA kernel (the Sinkhorn's column step, row step and codes in one test; the swapped
# loss with its gradient; the queue shift; the gradients' scaling), ragged shapes, no torch loss around them
SEL_SANITIZER_HEAVY=(tests/test_cuda_kernels.py -k "(bf16 and ragged and not accumulate and not fp32) or ragged_scale")
SEL_SANITIZER_FULL=(tests/test_cuda_kernels.py tests/test_cuda_loss.py
                    -k "ragged or case3 or paths_are_bitwise_reproducible")
SEL_ALL_TESTS=(tests)
SELECTIONS=(SEL_KERNEL_TESTS SEL_QUICK_KERNEL_TESTS SEL_SANITIZER SEL_SANITIZER_HEAVY SEL_SANITIZER_FULL SEL_ALL_TESTS)

# ---- the quick mode's schedule: phase:limit:floor in seconds of a real run ----------------------------
# One phase after another; a phase runs for at most its limit, and never into the floors of the phases
# after it (so a slow build shortens its own slot, not the tests'); "checks" takes what is left.
# Facts (H200): build 22 s; the quick kernel tests 97 s with -n 12 (208b416); the checks side by side
# 32 s (b05a185). Floors + PACK_S <= QUICK_BUDGET.
QUICK_BUDGET=240
QUICK_SCHEDULE=(build:50:35 gpu:20:10 kernel-tests:115:107 bench:50:30 checks:240:45)
PACK_S=5  # kept for writing the summary and packing the logs
DRY_BUDGET=110  # a dry run scales the schedule by DRY_BUDGET / QUICK_BUDGET

if [[ "$MODE" == selections ]]; then
  for name in "${SELECTIONS[@]}"; do
    declare -n selection=$name
    printf '%s' "$name"; printf '\t%s' "${selection[@]}"; printf '\n'
    unset -n selection
  done
  exit 0
fi
if [[ "$MODE" == schedule ]]; then
  echo "budget $QUICK_BUDGET pack $PACK_S dry-budget $DRY_BUDGET"
  for phase in "${QUICK_SCHEDULE[@]}"; do echo "${phase//:/ }"; done
  exit 0
fi

# The commit measured: the project's own git checkout (its top level is this folder, not a repository
# that encloses a copy of it), else .gpu-commit (written before the copy to the device), else none
COMMIT=none
COMMIT_SOURCE="neither a git checkout of this folder nor a .gpu-commit"
# (a dirty checkout beside a .gpu-commit is a device copy over an older base: the recorded commit wins)
TOP=$(git rev-parse --show-toplevel 2>/dev/null) || TOP=""
DIRTY_COPY=0
if [[ -f .gpu-commit ]] && git status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then DIRTY_COPY=1; fi
if [[ -n "$TOP" && "$(cd "$TOP" && pwd -P)" == "$(pwd -P)" && $DIRTY_COPY == 0 ]] && HEAD_COMMIT=$(git rev-parse HEAD 2>/dev/null); then
  COMMIT=$HEAD_COMMIT
  COMMIT_SOURCE="git$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ', with uncommitted changes')"
elif [[ -f .gpu-commit ]]; then
  RECORDED=$(tr -d '[:space:]' < .gpu-commit)
  if [[ "$RECORDED" =~ ^[0-9a-f]{7,40}$ ]]; then COMMIT=$RECORDED; COMMIT_SOURCE=.gpu-commit
  else COMMIT_SOURCE=".gpu-commit holds no commit"; fi
fi
if [[ "$MODE" == commit ]]; then echo "$COMMIT ($COMMIT_SOURCE)"; exit 0; fi

# ---- where things go -------------------------------------------------------------------------------
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
LOGS=$WORK/logs
STATUS=$WORK/status
mkdir -p "$LOGS" "$STATUS"
# the installed package, not a shadowing source tree (the same here with the editable install there)
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 TRITON_DEFAULT_FP_FUSION=1

case "$MODE" in
  quick) BUDGET=$QUICK_BUDGET ;;
  tests|bench) BUDGET=540 ;;
esac
(( DRY )) && BUDGET=$DRY_BUDGET
BUDGET=${GPU_SESSION_BUDGET_S:-$BUDGET}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=10  # seconds kept back from every step for the steps after it (raised per phase) and packing

# slot PHASE: the seconds PHASE may run now (quick mode): its limit, but never into the floors of the
# phases after it or the packing; the schedule is scaled to BUDGET / QUICK_BUDGET (a dry run's 110 s)
slot() {
  local phase name limit floor later=0 found=0 mine=0
  for phase in "${QUICK_SCHEDULE[@]}"; do
    IFS=: read -r name limit floor <<< "$phase"
    if (( found )); then later=$(( later + floor )); fi
    if [[ $name == "$1" ]]; then found=1; mine=$limit; fi
  done
  local scaled=$(( mine * BUDGET / QUICK_BUDGET )) room=$(( DEADLINE - $(date +%s) - (later + PACK_S) * BUDGET / QUICK_BUDGET ))
  (( room < scaled )) && scaled=$room
  (( scaled < 0 )) && scaled=0
  echo "$scaled"
}

PLAN=()  # step names in summary order
plan() { PLAN+=("$@"); }

# record NAME STATUS RC SECONDS NOTE [START LIMIT]: one status file per step (START: seconds into the
# run when it began; LIMIT: its time limit), then summary.txt is rewritten
LINE='%-22s %-12s %4s %6s %6s %6s  %s\n'
record() {
  printf "$LINE" "$1" "$2" "$3" "$4" "${6:--}" "${7:--}" "$5" > "$STATUS/$1"
  write_summary
}

write_summary() {
  local tmp="$OUT/.summary.$$.$BASHPID" name bad=0 done=0
  {
    echo "# gpu_session.sh $MODE$( ((DRY)) && echo ' --dry-run') | commit $COMMIT | started $(date -u -d "@$START" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ) | budget ${BUDGET} s | elapsed $(( $(date +%s) - START )) s"
    printf "$LINE" step status rc secs start limit note
    for name in "${PLAN[@]}"; do
      if [[ -f "$STATUS/$name" ]]; then
        cat "$STATUS/$name"; done=$((done + 1))
        grep -qE '^[^ ]+ +(FAIL|timeout) ' "$STATUS/$name" && bad=$((bad + 1))
      else
        printf "$LINE" "$name" pending - - - - "not run yet"
      fi
    done
    echo "# $done of ${#PLAN[@]} steps recorded; $bad failed or timed out"
  } > "$tmp" && mv -f "$tmp" "$OUT/summary.txt"
}

left() { echo $(( DEADLINE - $(date +%s) - RESERVE )); }

pytest_tally() {  # the final "N passed, M failed ... in Xs" line of a pytest log
  grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)' "$1" | tail -1 \
    | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*$//'
}

# run_step NAME LIMIT_S CMD...: CMD under timeout (clipped to the time left), output in logs/NAME.log,
# recorded as pass / FAIL / timeout; returns CMD's exit code
run_step() {
  local name=$1 limit=$2; shift 2
  local avail; avail=$(left)
  if (( avail < 5 )); then
    record "$name" skipped - 0 "session budget used up before it could start"; return 0
  fi
  (( limit > avail )) && limit=$avail
  local t0 rc status note=""
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=pass ;;
    124|137) status=timeout; note="killed at its ${limit} s limit" ;;
    *) status=FAIL ;;
  esac
  record "$name" "$status" "$rc" $(( $(date +%s) - t0 )) "$note" $(( t0 - START )) "$limit"
  return $rc
}

# amend NAME STATUS NOTE: change a recorded step's status and note (keeps rc, seconds, start, limit)
amend() {
  local rc secs start limit
  read -r _ _ rc secs start limit _ < "$STATUS/$1"
  record "$1" "$2" "$rc" "$secs" "$3" "$start" "$limit"
}

status_of() { local st=none; [[ -f "$STATUS/$1" ]] && read -r _ st _ < "$STATUS/$1"; echo "$st"; }

# collected SELECTION_NAME: the number of tests the selection collects here (0 when none or on a
# collection error)
collected() {
  declare -n sel=$1
  "$PY" -m pytest --collect-only -q -p no:cacheprovider "${sel[@]}" 2>/dev/null | grep -c '::'
  unset -n sel
}

PYTEST_OPTS=(-q -rfEs -p no:cacheprovider)
xdist_opts() { "$PY" -c "import xdist" 2>/dev/null && echo "-n ${1:-8}"; }
timeout_opts() { "$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=${1:-120}"; }

# pytest_step NAME LIMIT_S SELECTION_NAME [extra pytest args...]: a dry run collects the selection
# (the step fails if it collects no test); a real run fails when nothing is collected (pytest exit 5)
# and passes only if some test passed (all skipped would mean no GPU)
pytest_step() {
  local name=$1 limit=$2 selname=$3; shift 3
  declare -n sel=$selname
  if (( DRY )); then
    run_step "$name" "$limit" "$PY" -m pytest --collect-only -q -p no:cacheprovider "${sel[@]}"
    local n; n=$(grep -c '::' "$LOGS/$name.log")
    if [[ $(status_of "$name") == pass ]]; then
      if (( n > 0 )); then amend "$name" pass "dry run: collected $n tests, none run"
      else amend "$name" FAIL "selection $selname collects no test: ${sel[*]}"; fi
    fi
    unset -n sel; return 0
  fi
  if (( ! GPU_OK )); then
    record "$name" unavailable - 0 "no GPU visible to torch"; unset -n sel; return 0
  fi
  run_step "$name" "$limit" "$PY" -m pytest "${PYTEST_OPTS[@]}" --junitxml="$LOGS/$name.xml" "$@" "${sel[@]}"
  local rc=$? st tally; st=$(status_of "$name"); tally=$(pytest_tally "$LOGS/$name.log")
  if (( rc == 5 )); then
    amend "$name" FAIL "selection $selname collected no test: ${sel[*]}"
  elif [[ "$st" == pass && "$tally" != *passed* ]]; then
    amend "$name" FAIL "no test passed (${tally:-no tally}): the GPU tests were skipped?"
  elif [[ "$st" != skipped ]]; then
    amend "$name" "$st" "${tally:-no pytest tally}$( [[ $st == timeout ]] && echo '; killed at its limit')"
  fi
  unset -n sel
  return $rc
}

SANITIZER=""
find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/nvcc)")/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
           /opt/nvidia/compute-sanitizer/compute-sanitizer; do
    [[ -n "$c" && -x "$c" ]] && { SANITIZER=$c; return 0; }
  done
  return 1
}

# sanitizer_step TOOL SELECTION_NAME LIMIT_S: the selection is counted first, within the step's time
sanitizer_step() {
  local tool=$1 selname=$2 limit=$3 name="sanitizer-$1" t0
  t0=$(date +%s)
  declare -n sel=$selname
  local n; n=$(collected "$selname")
  limit=$(( limit - ($(date +%s) - t0) ))
  if (( n == 0 )); then
    record "$name" FAIL - 0 "selection $selname collects no test: ${sel[*]}"; unset -n sel; return 1
  fi
  if [[ -z "$SANITIZER" ]]; then
    record "$name" unavailable - 0 "compute-sanitizer not found (PATH, next to nvcc, /usr/local/cuda); selection collects $n tests"; unset -n sel; return 0
  fi
  if (( DRY )); then
    record "$name" skipped - 0 "dry run: GPU-only tool ($SANITIZER); selection collects $n tests"; unset -n sel; return 0
  fi
  if (( ! GPU_OK )); then
    record "$name" unavailable - 0 "no GPU visible to torch"; unset -n sel; return 0
  fi
  # one allocation per tensor, so memcheck sees every overrun; errors exit 99, pytest failures 1
  run_step "$name" "$limit" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 99 \
    --print-limit 100 "$PY" -m pytest -q -p no:cacheprovider "${sel[@]}"
  local rc=$? st log="$LOGS/$name.log"
  st=$(status_of "$name")
  local errors; errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+ errors?' "$log" | tail -1)
  local tally; tally=$(pytest_tally "$log")
  if grep -qiE 'Device not supported|Unable to find injection library|Failed to initialize the sanitizer|not supported on this (device|platform)|No supported devices' "$log"; then
    amend "$name" unavailable "the machine refused compute-sanitizer: $(grep -iE -m1 'not supported|unable to find|failed to initialize' "$log" | cut -c1-150)"
  elif (( rc == 5 )); then
    amend "$name" FAIL "selection $selname collected no test under the sanitizer: ${sel[*]}"
  elif [[ "$st" == pass && "$tally" != *passed* ]]; then
    amend "$name" FAIL "no test passed under the sanitizer (${tally:-no tally}); ${errors:-no error summary}"
  elif [[ "$st" != skipped ]]; then
    amend "$name" "$st" "${tally:-no pytest tally}; ${errors:-no error summary}$( ((rc == 99)) && echo ' (sanitizer errors)')"
  fi
  unset -n sel
  return $rc
}

pack() {  # logs.tar.gz: every log, the trainer's outputs (no checkpoints), swav-bench's folder
  local items=(logs) d
  for d in train-1gpu train-2gpu bench; do [[ -d "$WORK/$d" ]] && items+=("$d"); done
  tar -czf "$OUT/.logs.tar.gz.partial" -C "$WORK" --exclude='*.pt' "${items[@]}" 2>/dev/null \
    && mv -f "$OUT/.logs.tar.gz.partial" "$OUT/logs.tar.gz"
  rm -f "$OUT/.logs.tar.gz.partial"
}

FINAL=0  # 1 once the final summary was written and printed
finish() {
  trap - EXIT TERM INT
  (( FINAL )) || write_summary
  pack
  rm -rf "$WORK"
}
trap 'finish; exit 143' TERM INT
trap finish EXIT

# ---- steps -----------------------------------------------------------------------------------------
env_step() {
  local t0; t0=$(date +%s)
  {
    echo "command: bash benchmarks/gpu_session.sh $MODE$( ((DRY)) && echo ' --dry-run')"
    echo "commit: $COMMIT ($COMMIT_SOURCE)"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm); $(nproc) CPUs"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      nvidia-smi -L
    else
      echo "nvidia-smi: not found"
    fi
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu visible', torch.cuda.is_available())"
    "$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not importable"
    "$PY" -c "import numpy; print('numpy', numpy.__version__)" 2>/dev/null || echo "numpy: not importable"
    if command -v nvcc > /dev/null; then nvcc --version | tail -1; else echo "nvcc: not found"; fi
    echo "compute-sanitizer: ${SANITIZER:-not found}"
  } > "$OUT/env.txt" 2>&1
  cp "$OUT/env.txt" "$LOGS/env.txt"
  record env pass 0 $(( $(date +%s) - t0 )) "$(grep -m1 -E '^python' "$OUT/env.txt" | cut -c1-120)"
}

build_step() {
  if (( DRY )); then
    record build skipped - 0 "dry run: the installed package is used, nothing is built"; return 0
  fi
  run_step build "$1" env SWAV_KERNELS_BUILD_CUDA=1 SWAV_KERNELS_CUDA_ARCHS="${SWAV_KERNELS_CUDA_ARCHS:-90}" \
    "$PY" -m pip install --no-build-isolation --no-deps -e .
  { echo; echo "== python -m swav_kernels.info (after the build)"; "$PY" -m swav_kernels.info 2>&1; } >> "$OUT/env.txt"
}

GPU_OK=0
NGPU=0
gpu_step() {  # gpu_step LIMIT_S
  if command -v nvidia-smi > /dev/null; then NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU '); fi
  if (( DRY )); then
    record gpu skipped - 0 "dry run on $(uname -m): no GPU used (nvidia-smi -L lists $NGPU)"; return 0
  fi
  run_step gpu "${1:-60}" "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), torch.cuda.device_count(), 'devices')"
  if [[ $(status_of gpu) == pass ]]; then
    GPU_OK=1; amend gpu pass "$(tail -1 "$LOGS/gpu.log" | cut -c1-100); nvidia-smi -L lists $NGPU"
  fi
}

train_steps() {  # one epoch of the digits default on the GPU (AMP, channels_last), then torchrun x2
  local limit=$1
  # found, not imported (seconds the trainer's own time limit needs); the trainer imports them itself
  if ! "$PY" -c "import importlib.util as u, sys; missing = [m for m in ('torchvision', 'timm', 'sklearn') if u.find_spec(m) is None]; sys.exit('not installed: ' + ', '.join(missing) if missing else None)" > "$LOGS/train-deps.log" 2>&1; then
    record train-1gpu unavailable - 0 "swav-train needs torchvision, timm, scikit-learn: $(tail -1 "$LOGS/train-deps.log" | cut -c1-120)"
    record train-2gpu-torchrun unavailable - 0 "as train-1gpu"
    return 0
  fi
  local args
  if (( DRY )); then
    args=(--epochs 1 --device cpu --no-amp --size-dataset 64 --threads 1 --no-progress --dump-path "$WORK/train-1gpu")
  else
    args=(--epochs 1 --device cuda --amp --channels-last --no-progress --dump-path "$WORK/train-1gpu")
  fi
  if (( ! DRY && ! GPU_OK )); then
    record train-1gpu unavailable - 0 "no GPU visible to torch"
  else
    run_step train-1gpu "$limit" "$PY" -m swav_kernels.train "${args[@]}"
    local st; st=$(status_of train-1gpu)
    [[ $st != skipped ]] && amend train-1gpu "$st" "$(grep -E '^epoch 1/' "$LOGS/train-1gpu.log" | tail -1 | cut -c1-110)"
  fi
  if (( DRY || NGPU < 2 || ! GPU_OK )); then
    record train-2gpu-torchrun skipped - 0 "needs >= 2 GPUs (nvidia-smi -L lists $NGPU)$( ((DRY)) && echo '; dry run')"
  else
    run_step train-2gpu-torchrun "$limit" "$PY" -m torch.distributed.run --nnodes 1 --nproc_per_node 2 \
      --master_addr 127.0.0.1 --master_port 29517 -m swav_kernels.train --epochs 1 --device cuda --amp \
      --channels-last --sync-bn --no-progress --dump-path "$WORK/train-2gpu"
  fi
}

bench_step() {  # bench_step LIMIT_S swav-bench-args...: results.json and table.txt into $OUT
  local limit=$1; shift
  local avail; avail=$(left)
  (( limit > avail )) && limit=$avail
  # start no new case in the last 25 s (40 s of a long run): the case in flight finishes in them
  local budget=$(( limit > 160 ? limit - 40 : limit > 50 ? limit - 25 : limit / 2 ))
  (( budget < 5 )) && budget=5
  if (( ! DRY && ! GPU_OK )); then
    record bench unavailable - 0 "no GPU visible to torch"; return 0
  fi
  run_step bench "$limit" "$PY" -m swav_kernels.bench --out "$WORK/bench" --budget-s "$budget" "$@"
  local st; st=$(status_of bench)
  [[ $st == skipped ]] && return 0
  if [[ -f "$WORK/bench/results.json" && ! -f "$WORK/bench/table.txt" ]]; then  # killed mid-run: table of what was measured
    "$PY" -m swav_kernels.bench --from-json "$WORK/bench/results.json" --out "$WORK/bench" --no-plots \
      > "$LOGS/bench-from-json.log" 2>&1
  fi
  [[ -f "$WORK/bench/results.json" ]] && cp "$WORK/bench/results.json" "$OUT/results.json"
  [[ -f "$WORK/bench/table.txt" ]] && cp "$WORK/bench/table.txt" "$OUT/table.txt"
  local table="$WORK/bench/table.txt" targets met ok bad
  targets=$(grep -c '^target: ' "$table" 2>/dev/null); met=$(grep -c '^target: .* met$' "$table" 2>/dev/null)
  ok=$(grep -c ' ok$' "$table" 2>/dev/null); bad=$(grep -cE '  (failed|skipped)(: |$)' "$table" 2>/dev/null)
  amend bench "$st" "--budget-s ${budget}; target lines met: ${met:-0} of ${targets:-0}; rows ok: ${ok:-0}, failed or skipped: ${bad:-0}"
  pack
}

find_sanitizer
case "$MODE" in
  quick)
    plan env build gpu kernel-tests bench sanitizer-memcheck sanitizer-racecheck sanitizer-synccheck \
      sanitizer-initcheck train-1gpu train-2gpu-torchrun
    write_summary
    RESERVE=0  # slot keeps the floors of the later phases and the packing time
    env_step
    build_step "$(slot build)"
    pack
    gpu_step "$(slot gpu)"
    # the kernel tests alone and first, then the measurements alone, then the checks side by side
    TESTS_S=$(slot kernel-tests)
    pytest_step kernel-tests "$TESTS_S" SEL_QUICK_KERNEL_TESTS $(xdist_opts 12) $(timeout_opts 60)
    if (( DRY )); then
      BENCH_ARGS=(--device cpu --shapes tiny --dtypes bfloat16 float32 --cases tiny:bfloat16 tiny:float32
                  --passes fwd+bwd --ops loss --sweeps --exclude-peers reference-compiled
                  --compile-backend aot_eager --threads 1
                  --warmup-ms 1 --rep-ms 5 --min-samples 2 --max-samples 5 --no-plots)
    else
      BENCH_ARGS=(--shapes tiny swav-1gpu large-k --dtypes bfloat16
                  --cases tiny:bfloat16 swav-1gpu:bfloat16 large-k:bfloat16
                  --passes fwd+bwd --ops loss --sweeps --exclude-peers reference-compiled
                  --warmup-ms 5 --rep-ms 30 --min-samples 5 --no-plots)
    fi
    bench_step "$(slot bench)" "${BENCH_ARGS[@]}"
    RESERVE=$(( PACK_S * BUDGET / QUICK_BUDGET ))
    CHECK_S=$(slot checks)
    for tool in memcheck synccheck; do
      sanitizer_step "$tool" SEL_SANITIZER "$CHECK_S" &
    done
    for tool in racecheck initcheck; do
      sanitizer_step "$tool" SEL_SANITIZER_HEAVY "$CHECK_S" &
    done
    train_steps "$CHECK_S" &
    wait
    ;;
  tests)
    plan env build gpu all-tests sanitizer-memcheck sanitizer-racecheck sanitizer-synccheck sanitizer-initcheck \
      train-1gpu train-2gpu-torchrun
    write_summary
    env_step
    build_step 150
    gpu_step
    RESERVE=10
    pack
    CHECK_S=$(left)
    pytest_step all-tests "$CHECK_S" SEL_ALL_TESTS $(xdist_opts 8) $(timeout_opts 300) &
    for tool in memcheck racecheck synccheck initcheck; do
      sanitizer_step "$tool" SEL_SANITIZER_FULL "$CHECK_S" &
    done
    train_steps "$CHECK_S" &
    wait
    ;;
  bench)
    plan env build gpu bench
    write_summary
    env_step
    build_step 150
    gpu_step
    RESERVE=10
    if (( DRY )); then
      bench_step 600 --device cpu --shapes tiny --sweeps --compile-backend aot_eager --threads 1 \
        --warmup-ms 1 --rep-ms 5 --min-samples 2 --max-samples 5 --no-plots
    else
      bench_step 600
    fi
    ;;
esac

write_summary
FINAL=1
cat "$OUT/summary.txt"
grep -qE '^# .* 0 failed or timed out$' "$OUT/summary.txt"
