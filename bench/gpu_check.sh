#!/usr/bin/env bash
# One prepared GPU check (H100/H200, no network, installs nothing): SD 1.5 architecture with random weights
# at 512 px, full fine-tune through the library's real training loop; 10 warm-up + 30 timed steps per run;
# and the real-size rehearsals (bench/rehearsal.py: one pair through every stage on SD 1.5, then on SDXL at
# 1024 px with its family's LoRA, timed per stage).
# Writes one JSON line per run to $OUT/gpu.jsonl (an error line when a run fails or times out) and
# each run's stderr tail to $OUT/logs/. Runs in priority order and skips what no longer fits the budget.
#   bash bench/gpu_check.sh            # from the repo root; OUT defaults to bench/out
#   GPU_CHECK_BUDGET=540 WARMUP=10 STEPS=30 bash bench/gpu_check.sh
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # the script's own test on a CPU box: tiny model, 1+2 steps
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
BUDGET=${GPU_CHECK_BUDGET:-540}   # seconds for the whole script (the device tool allows 600 per command)
WARMUP=${WARMUP:-10}
STEPS=${STEPS:-30}
WORK=${TMPDIR:-/tmp}/dreamsolo-gpu-check
DRY=${GPU_CHECK_DRY:-0}
DEV=cuda MODEL=--sd15-random REHEARSAL="--model sd15" REHEARSAL_XL="--model sdxl"
REF_PRECISION=fp16  # the reference script's class-image dtype; CPUs refuse fp16 (dreamsolo.sampling)
[ "$DRY" = 1 ] && DEV=cpu MODEL="--preset tiny" WARMUP=1 STEPS=2 REF_PRECISION=fp32 REHEARSAL="--model tiny" REHEARSAL_XL="--model tiny-sdxl"
mkdir -p "$OUT/logs" "$WORK"
JSONL="$OUT/gpu.jsonl"
START=$(date +%s)
trap 'rm -rf "$WORK"' EXIT

note() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
jline() {  # jline NAME RC MESSAGE: an error line that needs no python
  printf '{"bench": "gpu_check", "run": "%s", "rc": %s, "error": "%s"}\n' "$1" "$2" \
    "$(printf '%s' "$3" | tr -d '"\\' | tr '\n\r\t' '   ' | cut -c1-1500)" >> "$JSONL"
}

# Python: the repo's venv when it came along, else the machine's; the package from src/ if not installed.
PY=python3
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null && PY=.venv/bin/python
command -v "$PY" >/dev/null || PY=python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=5
missing=$($PY - <<'EOF' 2>&1
import importlib, os
bad = []
for m in ("torch", "diffusers", "transformers", "safetensors", "yaml", "PIL", "tqdm", "numpy", "dreamsolo.training.loop"):
    try:
        importlib.import_module(m)
    except Exception as e:
        bad.append(f"{m} ({type(e).__name__}: {e})")
import torch
if not torch.cuda.is_available() and os.environ.get("GPU_CHECK_DRY") != "1":
    bad.append("torch sees no CUDA GPU")
print("; ".join(bad))
EOF
)
if [ -n "$missing" ]; then
  note "cannot run: $missing"; jline setup 1 "python=$PY: $missing"; exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/logs/nvidia-smi.txt" 2>&1
$PY -c "import json, os, torch, diffusers; print(json.dumps({'bench': 'gpu_check', 'run': 'env', 'python': '$PY',
  'torch': torch.__version__, 'cuda': torch.version.cuda, 'diffusers': diffusers.__version__,
  'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'cpus': os.cpu_count(),
  'nvidia_smi': open('$OUT/logs/nvidia-smi.txt').read().strip()}))" >> "$JSONL" 2>/dev/null
BNB=0
$PY -c "import bitsandbytes" >/dev/null 2>&1 && BNB=1
note "python=$PY bitsandbytes=$BNB budget=${BUDGET}s"

run() {  # run NAME LIMIT_S ARGS...: one train_step.py (or other bench) command with its own timeout
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 45 ]; then
    note "skip $name (${remaining}s left)"; jline "$name" 0 "skipped: ${remaining}s of the budget left"; return 0
  fi
  [ "$limit" -gt $(( remaining - 10 )) ] && limit=$(( remaining - 10 ))
  note "run $name (limit ${limit}s): $*"
  local tmp="$WORK/$name.out" rc
  timeout --kill-after=10 "$limit" "$PY" "$@" > "$tmp" 2> "$WORK/$name.err"
  rc=$?
  tail -c 20000 "$WORK/$name.err" > "$OUT/logs/$name.log"
  if tail -n 1 "$tmp" | grep -q '^{'; then
    tail -n 1 "$tmp" | sed "s/^{/{\"run\": \"$name\", \"rc\": $rc, /" >> "$JSONL"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    jline "$name" "$rc" "timed out after ${limit}s: $(tail -c 300 "$WORK/$name.err")"
  else
    jline "$name" "$rc" "$(tail -c 600 "$WORK/$name.err")"
  fi
  note "$name rc=$rc"
}

SD="--model-dir $WORK/sd15 --device $DEV --warmup $WARMUP --steps $STEPS"
run build 200 bench/train_step.py $MODEL --model-cache "$WORK/sd15" --build-only --device $DEV
if [ ! -f "$WORK/sd15/model_index.json" ]; then
  note "no model, stopping"; exit 1
fi
run full-bf16 150 bench/train_step.py $SD --method full --mixed-precision bf16
# every stage at real size (~4-5 min on an H200: the base stage builds SD 1.5 on the CPU, each stage loads it
# cold); host RSS limit 100 GiB; no activation probe (it measures the CPU's resident set)
run rehearsal 330 bench/rehearsal.py $REHEARSAL --no-probe --jsonl --max-rss-gb 100 --timeout 300
# SDXL base at 1024 px, Stage II with LoRA (the sdxl preset's default; full SDXL is the SD 1.5 run's path at
# 3x the parameters): second in priority, so it runs whenever the SD 1.5 checks leave it the time
run rehearsal-sdxl 300 bench/rehearsal.py $REHEARSAL_XL --stage2 lora --no-probe --jsonl --max-rss-gb 100 --timeout 240
if [ "$BNB" = 1 ]; then
  run full-bf16-gc-8bit 150 bench/train_step.py $SD --method full --mixed-precision bf16 \
    --gradient-checkpointing --use-8bit-adam
else
  jline full-bf16-gc-8bit 0 "skipped: bitsandbytes does not import here"
  run full-bf16-gc 150 bench/train_step.py $SD --method full --mixed-precision bf16 --gradient-checkpointing
fi
run full-fp32 150 bench/train_step.py $SD --method full --mixed-precision fp32
run lora-bf16 120 bench/train_step.py $SD --method lora --mixed-precision bf16
# the same LoRA step as one process under `accelerate launch` (how DREAMSOLO_NPROC runs a training stage:
# launcher, env, device placement), to compare with lora-bf16 above
run accelerate-1proc-lora-bf16 150 -m accelerate.commands.launch --num_processes 1 --num_machines 1 \
  --mixed_precision no --dynamo_backend no bench/train_step.py $SD --method lora --mixed-precision bf16
run priors-sd15 120 bench/priors.py --model-dir "$WORK/sd15" --device $DEV --images 8 --repeats 1 \
  --configs dpm:20:8:auto ddim:50:4:auto ref:50:4:$REF_PRECISION
run tiny-fp32 90 bench/train_step.py --preset tiny --device $DEV --warmup $WARMUP --steps $STEPS
note "done: $(wc -l < "$JSONL") lines in $JSONL"
