#!/usr/bin/env bash
# How deploy/gpu_smoke.sh judges what it runs, checked without a GPU. It runs against a fake bundle (the bundle's
# env.sh and run-tests.sh) and a fake build (through `ctest -L gpu`) whose test executables are skip_policy_probe
# (passing, failing, skipping, partly skipping) or small scripts (a crash, a disabled test, a hang), and whose
# mlagpt is a script that writes what `train` would (a falling or rising loss, a skipped step, an MFU or none) and
# prints a sample. Each case checks the exit status and a line of the output, mostly one line of the summary.
#   check_gpu_smoke.sh REPO PROBE
set -euo pipefail
repo=$1
probe=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The stand-in for mlagpt. train writes config.json, metrics.jsonl and checkpoints/latest: FAKE_STEPS steps (default
# run.max_steps) whose loss goes linearly from FAKE_FIRST to FAKE_LAST (null at step FAKE_NULL_STEP), with
# skipped_steps_total FAKE_SKIPPED and an mfu of FAKE_MFU unless it is empty; then exits FAKE_TRAIN_STATUS.
mkdir -p "$tmp/fake" "$tmp/data"
cat >"$tmp/fake/mlagpt" <<'FAKE'
#!/usr/bin/env bash
set -euo pipefail
command=$1
shift
case $command in
  version) echo "fake mlagpt" ;;
  train)
    for arg in "$@"; do
      case $arg in
        --run.out_dir=*) out=${arg#*=} ;;
        --run.max_steps=*) max_steps=${arg#*=} ;;
        --monitoring.peak_flops=*) peak_flops=${arg#*=} ;;
      esac
    done
    mkdir -p "$out/checkpoints"
    printf '{"run": {"max_steps": %s, "log_every": 10}, "monitoring": {"peak_flops": %s}}\n' "$max_steps" \
      "${peak_flops:-0}" >"$out/config.json"
    awk -v n="${FAKE_STEPS:-$max_steps}" -v first="${FAKE_FIRST:-10}" -v last="${FAKE_LAST:-6}" \
      -v null_step="${FAKE_NULL_STEP:-0}" -v skipped="${FAKE_SKIPPED:-0}" -v mfu="${FAKE_MFU-0.4}" 'BEGIN {
        for (s = 1; s <= n; ++s) {
          loss = s == null_step ? "null" : first + (last - first) * (s - 1) / (n - 1)
          printf "{\"kind\": \"train\", \"step\": %d, \"loss\": %s, \"tokens\": 65536, \"step_seconds\": 0.2, ", s, loss
          printf "\"tokens_per_second\": 327680, \"skipped_steps_total\": %d", skipped
          printf "%s}\n", mfu == "" ? "" : ", \"mfu\": " mfu
        }
        printf "{\"kind\": \"eval\", \"step\": %d, \"val_loss\": 6.5, \"val_perplexity\": 665}\n", n
      }' >"$out/metrics.jsonl"
    echo step_00000050 >"$out/checkpoints/latest"
    exit "${FAKE_TRAIN_STATUS:-0}"
    ;;
  sample)
    echo "The meaning of life is to pass the smoke test."
    exit "${FAKE_SAMPLE_STATUS:-0}"
    ;;
  *) exit 1 ;;
esac
FAKE
printf '#!/usr/bin/env bash\nkill -SEGV $$\n' >"$tmp/fake/crash_test"
printf '#!/usr/bin/env bash\nsleep 600\n' >"$tmp/fake/hang_test"
cat >"$tmp/fake/disabled_test" <<'FAKE'
#!/usr/bin/env bash
echo '[==========] Running 1 test from 1 test suite.'
echo '[  PASSED  ] 1 test.'
echo '  YOU HAVE 1 DISABLED TEST'
FAKE
chmod +x "$tmp/fake"/*
echo '{}' >"$tmp/data/dataset.json"

bundle=$tmp/bundle
mkdir -p "$bundle/bin"
cp "$repo/deploy/bundle/env.sh" "$repo/deploy/bundle/run-tests.sh" "$repo/deploy/gpu_smoke.sh" "$bundle/"
cp -r "$repo/launch/configs" "$bundle/configs"
cp "$tmp/fake"/* "$bundle/bin/"
ln -s "$probe" "$bundle/bin/probe"
build=$tmp/build
mkdir -p "$build/trainer"
cp "$tmp/fake/mlagpt" "$build/trainer/"

failures=0
# expect STATUS REGEX WHERE TESTS [VAR=VALUE ...] [-- ARG ...]: gpu_smoke.sh ARG... in WHERE (bundle or checkout),
# with the environment VAR=VALUE... and the gpu tests TESTS (lines "NAME EXECUTABLE [ARG ...]", EXECUTABLE in the
# fake bundle's bin/), exits STATUS and prints REGEX.
expect() {
  local want=$1 regex=$2 where=$3 tests=$4 name exe args script got=0 vars=()
  shift 4
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    vars+=("$1")
    shift
  done
  [ $# -eq 0 ] || shift
  if [ "$where" = bundle ]; then
    printf '%s\n' "$tests" >"$bundle/gpu-tests.txt"
    script=$bundle/gpu_smoke.sh
  else
    : >"$build/CTestTestfile.cmake"
    while read -r name exe args; do
      [ "$exe" = probe ] && exe=$probe || exe=$bundle/bin/$exe
      printf 'add_test([=[%s]=] "%s" %s)\nset_tests_properties([=[%s]=] PROPERTIES LABELS "%s" SKIP_RETURN_CODE 77)\n' \
        "$name" "$exe" "$args" "$name" "${label:-gpu}" >>"$build/CTestTestfile.cmake"
    done <<<"$tests"
    script=$repo/deploy/gpu_smoke.sh
  fi
  env -u MLAGPT_SMOKE_DEVICE -u MLAGPT_SMOKE_TIMEOUT -u MLAGPT_REQUIRE_GPU TORCH_LIB="$tmp/no-torch" \
    MLAGPT_SMOKE_DATA="$tmp/data" MLAGPT_SMOKE_DIR="$tmp/work" MLAGPT_SMOKE_BUILD="$build" "${vars[@]}" \
    "$script" "$@" >"$tmp/out" 2>&1 || got=$?
  local what="$where, ${vars[*]} $* [${tests//$'\n'/; }]"
  if [ "$got" -eq "$want" ] && grep -qE -- "$regex" "$tmp/out"; then
    echo "ok:   $what: exit $got, /$regex/"
  else
    echo "FAIL: $what: exit $got (want $want), /$regex/ $(grep -qE -- "$regex" "$tmp/out" || echo 'not ')found in:"
    sed -n '/summary/,$p' "$tmp/out"
    failures=$((failures + 1))
  fi
}
pass='t probe --gtest_filter=Probe.Passes'

# The tests, through run-tests.sh and through CTest.
for where in bundle checkout; do
  expect 0 '^\[smoke\] PASS: all [0-9]+ checks passed' $where "$pass"
  expect 1 '^  FAIL  tests .*0 tests passed, 0 failed, 1 skipped.*skipped: Probe.Skips' $where \
    't probe --gtest_filter=Probe.Skips'
  expect 1 '^  FAIL  tests .*1 tests passed, 0 failed, 1 skipped.*skipped: Probe.Skips' $where \
    't probe --gtest_filter=Probe.Passes:Probe.Skips'
  expect 1 '^  FAIL  tests .*2 executables: 1 tests passed, 1 failed.*failed: Probe.Fails' $where \
    "$pass"$'\nu probe --gtest_filter=Probe.Fails'
  expect 1 '^  FAIL  tests .*failed: Probe.MissingGpu' $where 't probe --gtest_filter=Probe.MissingGpu'
  expect 1 '^  FAIL  tests .*0 tests passed, 0 failed, 0 skipped' $where 't probe --gtest_filter=No.Such'
  expect 1 '^  FAIL  tests .*0 executables.*runner exit status' $where 't crash_test'
  expect 1 '^  FAIL  tests .*1 tests passed, 0 failed, 0 skipped, 1 disabled' $where 't disabled_test'
  expect 1 '^  FAIL  tests .*runner exit status 124 \(timed out after 3 s\)' $where 't hang_test' \
    MLAGPT_SMOKE_TIMEOUT=3
done
expect 1 '^  FAIL  tests .*1 not run by CTest' checkout 't probe --gtest_filter=Probe.Skips'
label=cpu expect 1 '^  FAIL  tests .*runner exit status 8' checkout "$pass"  # no gpu-label test

# Training, the loss, the throughput and the sample.
expect 0 '^  PASS  loss +10\.020 -> 5\.980, fell 40\.3% \(mean of steps 1-5 against 46-50\); val loss 6\.500' bundle \
  "$pass" FAKE_FIRST=10.2 FAKE_LAST=5.8
expect 0 '^  PASS  throughput +327,680 tokens/s, MFU 40\.0% .*\(steps 11-50\)' bundle "$pass"
expect 1 '^  FAIL  train +exit status 1 ' bundle "$pass" FAKE_TRAIN_STATUS=1
expect 1 '^  FAIL  loss .*rose .*did not fall by at least 10%' bundle "$pass" FAKE_FIRST=5 FAKE_LAST=6
expect 1 '^  FAIL  loss .*fell 3\.7%.*did not fall by at least 10%' bundle "$pass" FAKE_FIRST=5 FAKE_LAST=4.8
expect 1 '^  FAIL  loss .*1 step\(s\) skipped for a non-finite loss' bundle "$pass" FAKE_SKIPPED=1
expect 1 '^  FAIL  loss .*a logged loss is not finite' bundle "$pass" FAKE_NULL_STEP=30
expect 1 '^  FAIL  loss .*the last logged step is 30, not run.max_steps = 50' bundle "$pass" FAKE_STEPS=30
expect 0 '^  PASS  loss .*against 96-100' bundle "$pass" FAKE_STEPS=100 -- --run.max_steps=100
expect 0 '^  PASS  throughput .*MFU 40\.0% \(peak: 756 TFLOP/s, monitoring.peak_flops\)' bundle "$pass" -- \
  --monitoring.peak_flops=756e12
expect 1 '^  FAIL  throughput .*no MFU: the trainer knows no peak' bundle "$pass" FAKE_MFU=
expect 1 '^  FAIL  throughput .*MFU 150\.0% .*not within' bundle "$pass" FAKE_MFU=1.5
expect 0 '^  PASS  throughput .*no MFU \(no peak FLOP/s for a CPU\)' bundle "$pass" FAKE_MFU= MLAGPT_SMOKE_DEVICE=cpu
expect 1 '^  FAIL  sample +exit status 1' bundle "$pass" FAKE_SAMPLE_STATUS=1
expect 1 '^  SKIP  train +no dataset' bundle "$pass" MLAGPT_SMOKE_DATA="$tmp/no-data"
expect 2 'MLAGPT_SMOKE_DEVICE must be cuda or cpu' bundle "$pass" MLAGPT_SMOKE_DEVICE=gpu
[ "$failures" -eq 0 ] || exit 1
