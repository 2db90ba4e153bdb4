#!/usr/bin/env bash
# How a skip reaches CTest: runs skip_policy_probe with one combination of its tests at a time and checks the exit
# status, which is all CTest reads (SKIP_RETURN_CODE 77). A skip must never hide a failure, a missing install is a
# failure under CI=true, and a missing GPU is a failure under MLAGPT_REQUIRE_GPU=1.
#   check_skip_policy.sh PROBE
set -u
probe=$1
failures=0
expect() {  # expect STATUS ENV... -- FILTER
  local want=$1 env=() filter
  shift
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  filter=$2
  env -u CI -u MLAGPT_REQUIRE_GPU "${env[@]}" "$probe" --gtest_filter="$filter" >/dev/null 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: ${env[*]} --gtest_filter=$filter exited $got, want $want"
    failures=$((failures + 1))
  else
    echo "ok:   ${env[*]} --gtest_filter=$filter exited $got"
  fi
}
expect 0 -- 'Probe.Passes'
expect 77 -- 'Probe.Skips'
expect 1 -- 'Probe.Skips:Probe.Fails'          # a skip beside a failure: failed, not skipped
expect 0 -- 'Probe.Skips:Probe.Passes'         # some passed: passed (the skip is in the output)
expect 77 -- 'Probe.MissingInstall'
expect 1 CI=true -- 'Probe.MissingInstall'     # CI: setup must have installed it
expect 77 -- 'Probe.MissingGpu'
expect 77 CI=true -- 'Probe.MissingGpu'        # CI machines have no GPU: still a skip
expect 1 MLAGPT_REQUIRE_GPU=1 -- 'Probe.MissingGpu'
[ "$failures" -eq 0 ] || exit 1
