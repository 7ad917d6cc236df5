#!/usr/bin/env bash
# The prepared device check (issue #19): calibrate, the reference harness, and validate, in one call.
#
#   scripts/gpu_check.sh                       # on a GPU: results/gpu/<date>-<gpu>/ (at most ~8 minutes)
#   scripts/gpu_check.sh --device cpu          # this machine's CPU: results/cpu/<date>/
#   scripts/gpu_check.sh --device cpu --tiny --out /tmp/check   # CI's run (seconds; tests/harness)
#
# Steps (each under its own timeout; the expert store is built once in $STORE and reused):
#   1. moesim calibrate          -> profile.yaml (+ .calibration.json/.csv)
#   2. moesim harness            -> harness/ (trace.parquet: the routing the harness produced; runs/steps)
#   3. moesim validate           -> validate/harness-trace/ (lru, lfu, belady at two capacities)
#   4. make test-gpu             -> test-gpu.log (GPU only, when the Makefile has that target)
#   5. README.md                 (python -m moesim.harness.check_report)
# Layout: results/README.md. Environment: PYTHON (default python3), PYTHONPATH as the caller sets it.
set -uo pipefail

DEVICE=cuda
TINY=0
OUT=""
STORE=""
REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --store) STORE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
PY="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATE="$(date -u +%Y-%m-%d)"

if [ "$DEVICE" = cpu ]; then
  NAME=cpu
  BASE_ARGS=()
  DTYPE=fp32
  DEFAULT_OUT="$ROOT/results/cpu/$DATE"
else
  NAME="$("$PY" - <<'EOF'
import re, torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: run with --device cpu")
name = torch.cuda.get_device_name(0).lower()
for key, slug in (("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("a100", "a100-80gb"),
                  ("4090", "rtx4090"), ("3090", "rtx3090"), ("gh200", "gh200")):
    if key in name:
        print(slug); break
else:
    print(re.sub(r"[^a-z0-9]+", "-", name).strip("-"))
EOF
)" || exit 1
  case "$NAME" in
    h200) BASE=h200-sxm ;; h100-pcie) BASE=h100-pcie ;; h100-sxm) BASE=h100-sxm ;; a100-80gb) BASE=a100-80gb ;;
    rtx4090) BASE=rtx4090 ;; rtx3090) BASE=rtx3090 ;; gh200) BASE=gh200 ;; *) BASE=h100-pcie ;;
  esac
  BASE_ARGS=(--base "$BASE")
  DTYPE=bf16
  DEFAULT_OUT="$ROOT/results/gpu/$DATE-$NAME"
fi
OUT="${OUT:-$DEFAULT_OUT}"
STORE="${STORE:-${TMPDIR:-/tmp}/moesim-check-store-$NAME-$DTYPE$([ "$TINY" = 1 ] && echo -tiny)}"
mkdir -p "$OUT" "$STORE"
: > "$OUT/timings.tsv"

if [ "$TINY" = 1 ]; then
  PRESET=tiny; QUICK=(--quick); WORK=(--requests 1 --prompt 2 --decode 3); CAPS="25%,50%"
else
  PRESET=olmoe-mini; QUICK=(); WORK=(--requests 2 --prompt 8 --decode 24); CAPS="10%,25%"
  [ "$DEVICE" != cpu ] && QUICK=(--quick --max-size 256MiB)
fi

SLOW=1  # the full CPU run is slower than a GPU's (and this machine may be shared): longer step limits
[ "$DEVICE" = cpu ] && [ "$TINY" = 0 ] && SLOW=4
CMDS=()
run_step() {  # name timeout_s command...
  local name="$1" limit="$2"; shift 2
  CMDS+=("$*")
  local t0=$SECONDS
  timeout "$((limit * SLOW))" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" >> "$OUT/timings.tsv"
  tail -n 20 "$OUT/$name.log"
  return $rc
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
STATUS=0
run_step calibrate 150 "$PY" -m moesim calibrate --device "$DEVICE" "${BASE_ARGS[@]}" "${QUICK[@]}" \
  --out "$OUT/profile.yaml" || STATUS=1
if [ $STATUS = 0 ]; then
  run_step harness 180 "$PY" -m moesim harness --device "$DEVICE" --profile "$OUT/profile.yaml" --preset "$PRESET" \
    --dtype "$DTYPE" --capacity "$CAPS" --repeat "$REPEAT" "${WORK[@]}" --store "$STORE" --out "$OUT/harness" \
    || STATUS=1
fi
if [ -f "$OUT/harness/trace.parquet" ]; then
  PREFETCH=(); [ "$DEVICE" != cpu ] && PREFETCH=(--prefetch none,oracle)
  run_step validate 180 "$PY" -m moesim validate --device "$DEVICE" --trace "$OUT/harness/trace.parquet" \
    --profile "$OUT/profile.yaml" --policies lru,lfu,belady --capacity "$CAPS" "${PREFETCH[@]}" --dtype "$DTYPE" \
    --repeat "$REPEAT" --out "$OUT/validate/harness-trace" || STATUS=1
fi
if [ "$DEVICE" != cpu ] && grep -q '^test-gpu:' "$ROOT/Makefile" 2>/dev/null; then
  run_step test-gpu 120 make -C "$ROOT" test-gpu || STATUS=1
fi
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

"$PY" - "$OUT" "$DEVICE" "$DATE" "$LOAD_START" "$LOAD_END" "$ROOT" "$PY" "${CMDS[@]}" <<'EOF'
import json, sys
out, device, date, load_start, load_end, root, py, *commands = sys.argv[1:]
# as a reader would type them: repository-relative paths, "python" for the interpreter
commands = [c.replace(root + "/", "").replace(py + " ", "python ", 1) for c in commands]
name = "cpu"
if device != "cpu":
    import torch
    name = torch.cuda.get_device_name(0)
else:
    try:
        name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
json.dump({"date": date, "device": device, "device_name": name, "load_start": load_start, "load_end": load_end,
           "commands": commands}, open(f"{out}/env.json", "w"), indent=2)
EOF
"$PY" -m moesim.harness.check_report "$OUT" || STATUS=1
echo "gpu_check.sh: wrote $OUT (status $STATUS)"
exit $STATUS
