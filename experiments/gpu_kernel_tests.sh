#!/usr/bin/env bash
# On a lent GPU: the kernel correctness tests on the real compiler, in PROCS processes at
# once (the tests dealt round-robin; Triton's compiles run in parallel).
# Usage: experiments/gpu_kernel_tests.sh OUTFILE  (PROCS, default 4; TEST_TIMEOUT_S, default 280)
# Writes each process's failures and summary to OUTFILE; exits non-zero if any failed.
set -uo pipefail
export TRITON_INTERPRET=${TRITON_INTERPRET:-0}
out=$1
procs=${PROCS:-4}
tmp=$(mktemp -d)
python3 -m pytest -q --co -p no:cacheprovider tests/test_kernels_*.py 2>/dev/null | grep "::" >"$tmp/ids"
pids=()
for ((i = 0; i < procs; i++)); do
  awk -v n="$procs" -v i="$i" 'NR % n == i' "$tmp/ids" >"$tmp/ids.$i"
  [ -s "$tmp/ids.$i" ] || continue
  mapfile -t ids <"$tmp/ids.$i"
  timeout "${TEST_TIMEOUT_S:-280}" python3 -m pytest -q -p no:cacheprovider "${ids[@]}" >"$tmp/log.$i" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
echo "kernel tests, $(wc -l <"$tmp/ids") collected, in ${#pids[@]} processes:" >"$out"
for log in "$tmp"/log.*; do
  { grep -E "^(FAILED|ERROR)" "$log"; tail -1 "$log"; } >>"$out"
done
cat "$out"
exit $rc
