#!/usr/bin/env bash
# The single-GPU smoke test (issue 13): one command that checks a GPU build end to end on a machine with one GPU.
#
#   tests       the gpu-label tests with skipping disallowed (MLAGPT_REQUIRE_GPU=1): any skip or failure fails
#   data        the dataset: the fortune files in a 4096-token BPE (ready-made in a bundle, else prepared once)
#   train       the GPT-2-small-sized MLA model (launch/configs/gpt2_small_mla.toml, its 50304-token vocabulary)
#               for 50 steps on CUDA in bf16: 16 x 1024 tokens x 4 micro-batches per step, warmup 10 steps
#   loss        the training loss falls: the mean of the first 5 logged losses (metrics.jsonl) against the last 5,
#               by at least 10%, with no step skipped for a non-finite loss
#   throughput  tokens/s and MFU from metrics.jsonl, over the steps after the first log interval (warm-up left out)
#   sample      text sampled from the final checkpoint (`mlagpt sample`)
# It prints one line per check and PASS or FAIL; the exit status is 1 if any check failed or was skipped.
#
#   deploy/gpu_smoke.sh [--section.key=value ...]   in a source checkout after the gpu build (build/gpu): the tests
#                                                   through `ctest -L gpu`; the dataset is prepared from Debian's
#                                                   fortunes package into the run directory on first use
#   BUNDLE/gpu_smoke.sh [--section.key=value ...]   in a bundle of deploy/gpu_bundle.sh on a bare GPU machine: the
#                                                   tests through BUNDLE/run-tests.sh, the libraries through
#                                                   BUNDLE/env.sh and the machine's torch wheel (python3's, or the
#                                                   torch/lib that TORCH_LIB names), the dataset BUNDLE/data/
# Arguments are overrides for `mlagpt train`, applied after the smoke test's own (so they win), e.g.
# --monitoring.peak_flops=756e12 for an H100 PCIe (the trainer takes 989e12 for any H100 or H200).
#
# Environment:
#   MLAGPT_SMOKE_DIR      where its files go (default: runs/gpu_smoke in a checkout, BUNDLE/smoke in a bundle); the
#                         training run is MLAGPT_SMOKE_DIR/run, replaced each time (its checkpoint about 1.4 GB)
#   MLAGPT_SMOKE_DATA     a dataset of `mlagpt prepare` to train on instead (vocabulary at most 50304)
#   MLAGPT_SMOKE_BUILD    the build directory in a checkout (default build/gpu)
#   MLAGPT_SMOKE_TIMEOUT  seconds each of the tests, the training and the sampling may take (default 900)
#   MLAGPT_SMOKE_DEVICE=cpu
#                         a DRY RUN of this script's own logic on a machine without a GPU, NOT a smoke test: a tiny
#                         model (2 layers, 128 wide, the dataset's vocabulary, 8 x 128 tokens per step, lr 3e-3) on
#                         the CPU, no MFU. The gpu tests still run, and fail without a device, as they must.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
device=${MLAGPT_SMOKE_DEVICE:-cuda}
limit=${MLAGPT_SMOKE_TIMEOUT:-900}
steps=50
min_loss_drop=0.10
case $device in
  cuda | cpu) ;;
  *) echo "gpu_smoke: MLAGPT_SMOKE_DEVICE must be cuda or cpu, not '$device'" >&2; exit 2 ;;
esac

say() { printf '[smoke] %s\n' "$*"; }
timeout_note() { [ "$1" -ne 124 ] || echo " (timed out after $limit s)"; }  # for an exit status of timeout(1)
checks=()  # "STATUS|NAME|DETAIL", STATUS being PASS, FAIL or SKIP
check() {
  checks+=("$1|$2|$3")
  say "$1 $2: $3"
}
summary() {
  local line status name detail bad=0
  echo
  say "summary (device $device$([ "$device" = cpu ] && echo ': a DRY RUN, not a GPU smoke test'))"
  for line in "${checks[@]}"; do
    IFS='|' read -r status name detail <<<"$line"
    printf '  %-4s  %-10s  %s\n' "$status" "$name" "$detail"
    [ "$status" = PASS ] || bad=$((bad + 1))
  done
  if [ $bad -eq 0 ]; then
    say "PASS: all ${#checks[@]} checks passed"
    exit 0
  fi
  say "FAIL: $bad of ${#checks[@]} checks failed or were skipped"
  exit 1
}

# Where the executables, the configs and the dataset are: a bundle holds env.sh and bin/mlagpt beside this script.
if [ -f "$here/env.sh" ] && [ -x "$here/bin/mlagpt" ]; then
  mode=bundle
  torch_lib=${TORCH_LIB:-}
  if [ -z "$torch_lib" ]; then
    locate='import os, torch; print(os.path.dirname(torch.__file__) + "/lib"); print(torch.__version__)'
    if ! found=$(python3 -c "$locate"); then
      check FAIL torch "python3 cannot import torch: set TORCH_LIB to the torch/lib folder of a torch wheel"
      summary
    fi
    torch_lib=${found%%$'\n'*}
    have=${found#*$'\n'}
    want=$(cat "$here/torch-version" 2>/dev/null || echo unknown)
    if [ "$have" = "$want" ] || [ "$want" = unknown ]; then
      check PASS torch "$have at $torch_lib (the bundle was built against $want)"
    else
      check FAIL torch "python3's torch is $have, the bundle was built against $want: its libraries may not load"
    fi
  fi
  # shellcheck source=bundle/env.sh source-path=SCRIPTDIR
  . "$here/env.sh" "$torch_lib"
  mlagpt=$here/bin/mlagpt
  configs=$here/configs
  work=${MLAGPT_SMOKE_DIR:-$here/smoke}
  dataset=${MLAGPT_SMOKE_DATA:-$here/data/fortunes_bpe4096}
else
  mode=checkout
  repo=$(cd "$here/.." && pwd)
  build=${MLAGPT_SMOKE_BUILD:-$repo/build/gpu}
  mlagpt=$build/trainer/mlagpt
  configs=$repo/launch/configs
  work=${MLAGPT_SMOKE_DIR:-$repo/runs/gpu_smoke}
  dataset=${MLAGPT_SMOKE_DATA:-$work/fortunes_bpe4096}
fi
if [ ! -x "$mlagpt" ]; then
  check FAIL build "no mlagpt executable at $mlagpt (build the gpu preset, or run the bundle's copy of this script)"
  summary
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
run=$work/run
say "mode $mode, device $device, mlagpt $mlagpt, files in $work"
"$mlagpt" version || true
if [ "$device" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

# tests: every gpu-label test must run and pass; the log is parsed for GoogleTest's summary lines, which CTest's -V
# and run-tests.sh both pass through, so an executable whose tests partly skipped (it exits 0) is caught too.
say "gpu-label tests (MLAGPT_REQUIRE_GPU=1)"
tests_log=$work/gpu-tests.log
rc=0
if [ $mode = bundle ]; then
  timeout "$limit" "$here/run-tests.sh" "$torch_lib" 2>&1 | tee "$tests_log" || rc=$?
else
  MLAGPT_REQUIRE_GPU=1 timeout "$limit" ctest --test-dir "$build" -L gpu -V --no-tests=error 2>&1 |
    tee "$tests_log" || rc=$?
fi
total() {  # total REGEX: the sum of the first number in each match of REGEX in the tests' log
  grep -oE "$1" "$tests_log" | grep -oE '[0-9]+' | awk '{ s += $1 } END { print s + 0 }' || true
}
executables=$(grep -cE '\[==========\] Running [0-9]+ tests? from' "$tests_log" || true)
passed=$(total '\[  PASSED  \] [0-9]+ tests?\.')
failed=$(total '\[  FAILED  \] [0-9]+ tests?, listed below')
skipped=$(total '\[  SKIPPED \] [0-9]+ tests?, listed below')
disabled=$(total 'YOU HAVE [0-9]+ DISABLED TESTS?')
not_run=$(grep -cE '\*\*\*Skipped|\*\*\*Not Run' "$tests_log" || true)
detail="$executables executables: $passed tests passed, $failed failed, $skipped skipped, $disabled disabled"
[ "$not_run" -eq 0 ] || detail+=", $not_run not run by CTest"
[ $rc -eq 0 ] || detail+=", runner exit status $rc$(timeout_note $rc)"
listed() {  # listed WORD: the names of the tests GoogleTest reported as WORD (FAILED or SKIPPED), comma-separated
  grep -oE "\[  $1 *\] [^ ]+ \([0-9]+ ms\)" "$tests_log" | awk '{ print $(NF - 2) }' | sort -u | paste -sd, - |
    sed 's/,/, /g' || true
}
names=$(listed FAILED)
[ -z "$names" ] || detail+="; failed: $names"
names=$(listed SKIPPED)
[ -z "$names" ] || detail+="; skipped: $names"
if [ $rc -eq 0 ] && [ "$failed" -eq 0 ] && [ "$skipped" -eq 0 ] && [ "$disabled" -eq 0 ] && [ "$not_run" -eq 0 ] &&
  [ "$passed" -gt 0 ]; then
  check PASS tests "$detail"
else
  check FAIL tests "$detail (log: $tests_log)"
fi

# data
if [ ! -f "$dataset/dataset.json" ] && [ $mode = checkout ] && [ -z "${MLAGPT_SMOKE_DATA:-}" ]; then
  say "preparing $dataset from the fortune files"
  "$mlagpt" prepare --tokenizer bpe --vocab-size 4096 --out "$dataset" || true
fi
if [ -f "$dataset/dataset.json" ]; then
  check PASS data "$dataset"
else
  check FAIL data "no dataset at $dataset (in a checkout, install Debian's fortunes package or set MLAGPT_SMOKE_DATA)"
  for name in train loss throughput sample; do check SKIP $name "no dataset"; done
  summary
fi

# train
if [ "$device" = cuda ]; then
  sizes=(--data.batch_size=16 --data.seq_len=1024 --optim.grad_accum=4)
else  # the dry run's tiny model
  sizes=(--model.vocab_size=0 --model.block_size=128 --model.n_layer=2 --model.n_embd=128 --model.n_head=4
    --model.kv_lora_rank=32 --model.q_lora_rank=64 --model.qk_nope_head_dim=16 --model.qk_rope_head_dim=16
    --model.v_head_dim=16 --data.batch_size=8 --data.seq_len=128 --optim.grad_accum=1 --optim.lr=3e-3)
fi
rm -rf "$run"
say "training $configs/gpt2_small_mla.toml for $steps steps into $run"
started=$SECONDS
rc=0
timeout "$limit" "$mlagpt" train --config "$configs/gpt2_small_mla.toml" --data.dir="$dataset" --run.out_dir="$run" \
  --run.device="$device" --run.dtype=bfloat16 --run.max_steps=$steps --run.log_every=10 --schedule.warmup_steps=10 \
  --eval.every=$steps --eval.batches=4 --checkpoint.every=0 --checkpoint.keep=1 "${sizes[@]}" "$@" 2>&1 |
  tee "$work/train.log" || rc=$?
seconds=$((SECONDS - started))
if [ $rc -ne 0 ] || [ ! -f "$run/checkpoints/latest" ]; then
  check FAIL train "exit status $rc$(timeout_note $rc) after $seconds s, \
$([ -f "$run/checkpoints/latest" ] && echo 'a' || echo 'no') final checkpoint (log: $work/train.log)"
else
  check PASS train "done in $seconds s, final checkpoint $run/checkpoints/$(cat "$run/checkpoints/latest")"
fi

# loss, throughput: from the metrics the trainer wrote, as "STATUS|NAME|DETAIL" lines.
if [ -f "$run/metrics.jsonl" ] && [ -f "$run/config.json" ]; then
  metrics=$(python3 - "$run/metrics.jsonl" "$run/config.json" "$device" "$min_loss_drop" <<'PY'
import json, math, sys

metrics_path, config_path, device, min_drop = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
config = json.load(open(config_path))
records = [json.loads(line) for line in open(metrics_path) if line.strip()]
train = [r for r in records if r.get("kind") == "train"]
evals = [r for r in records if r.get("kind") == "eval"]

def emit(status, name, detail):
    print(f"{status}|{name}|{detail}")

def mean(values):
    return sum(values) / len(values)

if not train:
    emit("FAIL", "loss", "metrics.jsonl holds no training step")
    emit("FAIL", "throughput", "metrics.jsonl holds no training step")
    sys.exit()

def finite(value):  # the JSONL writer stores a NaN or an infinity as null
    return isinstance(value, (int, float)) and math.isfinite(value)

# loss: the first k against the last k logged losses (single steps are noisy)
k = max(1, min(5, len(train) // 4))
first, last = train[:k], train[-k:]
problems = []
if not all(finite(r["loss"]) for r in train):
    problems.append("a logged loss is not finite")
first_loss = mean([r["loss"] for r in first if finite(r["loss"])] or [math.nan])
last_loss = mean([r["loss"] for r in last if finite(r["loss"])] or [math.nan])
skipped = train[-1].get("skipped_steps_total", 0)
if skipped:
    problems.append(f"{skipped} step(s) skipped for a non-finite loss or gradient")
max_steps = config["run"]["max_steps"]
if train[-1]["step"] != max_steps:
    problems.append(f"the last logged step is {train[-1]['step']}, not run.max_steps = {max_steps}")
drop = 1 - last_loss / first_loss if first_loss > 0 else float("nan")
if not drop >= min_drop:
    problems.append(f"it did not fall by at least {min_drop:.0%}")
detail = (f"{first_loss:.3f} -> {last_loss:.3f}, {'fell' if drop >= 0 else 'rose'} {abs(drop):.1%} (mean of steps "
          f"{first[0]['step']}-{first[-1]['step']} against {last[0]['step']}-{last[-1]['step']})")
if evals:
    val = evals[-1]["val_loss"]
    detail += f"; val loss {val:.3f}" if finite(val) else f"; val loss {val}"
    detail += f" at step {evals[-1]['step']}"
emit("FAIL" if problems else "PASS", "loss", detail + ("; " + "; ".join(problems) if problems else ""))

# throughput: the steps after the first log interval, whose time holds the start (CUDA context, allocator, kernels)
log_every = config["run"]["log_every"]
window = [r for r in train if r["step"] > log_every] or train[1:] or train
seconds = sum(r["step_seconds"] for r in window)
tokens_per_second = sum(r["tokens"] for r in window) / seconds if seconds > 0 else 0.0
span = f"steps {window[0]['step']}-{window[-1]['step']}"
status, detail = "PASS", f"{tokens_per_second:,.0f} tokens/s"
timed = [r for r in window if "mfu" in r]
if timed:
    # MFU is proportional to each step's tokens/s, so the time-weighted mean is that of the whole window.
    mfu = sum(r["mfu"] * r["step_seconds"] for r in timed) / sum(r["step_seconds"] for r in timed)
    peak = config["monitoring"]["peak_flops"]
    source = f"{peak / 1e12:.0f} TFLOP/s, monitoring.peak_flops" if peak > 0 else \
        "the trainer's for this GPU, 989 TFLOP/s dense bf16 for an H100 or H200"
    detail += f", MFU {mfu:.1%} (peak: {source})"
    if not 0 < mfu <= 1:
        status, detail = "FAIL", detail + ": not within (0, 100%], so the FLOP count or the peak is wrong"
elif device == "cuda":
    status = "FAIL"
    detail += (", no MFU: the trainer knows no peak FLOP/s for this GPU (it knows H100 and H200); "
               "pass --monitoring.peak_flops=...")
else:
    detail += ", no MFU (no peak FLOP/s for a CPU)"
if not tokens_per_second > 0:
    status = "FAIL"
emit(status, "throughput", f"{detail} ({span})")
PY
  ) || metrics="FAIL|loss|reading $run/metrics.jsonl failed"$'\n'"SKIP|throughput|reading the metrics failed"
  while IFS='|' read -r status name detail; do
    check "$status" "$name" "$detail"
  done <<<"$metrics"
else
  check SKIP loss "no $run/metrics.jsonl or config.json"
  check SKIP throughput "no $run/metrics.jsonl or config.json"
fi

# sample
if [ -f "$run/checkpoints/latest" ]; then
  prompt="The meaning of life is"
  say "sampling from $run/checkpoints"
  rc=0
  timeout "$limit" "$mlagpt" sample --ckpt "$run/checkpoints" --prompt "$prompt" --max-new-tokens 100 \
    --temperature 0.8 --top-k 50 --seed 1 --device "$device" >"$work/sample.txt" 2>"$work/sample.log" || rc=$?
  echo "----- sample"
  cat "$work/sample.txt"
  echo
  echo "-----"
  chars=$(wc -m <"$work/sample.txt")
  if [ $rc -eq 0 ] && [ "$chars" -gt ${#prompt} ]; then
    check PASS sample "$chars characters (prompt included) in $work/sample.txt"
  else
    check FAIL sample "exit status $rc, $chars characters (log: $work/sample.log)"
    cat "$work/sample.log"
  fi
else
  check SKIP sample "no checkpoint to sample from"
fi

summary
