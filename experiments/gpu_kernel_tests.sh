#!/usr/bin/env bash
# On a lent GPU: the kernel correctness tests on the real compiler, in PROCS processes at
# once (the tests dealt round-robin; Triton's compiles run in parallel).
# Usage: experiments/gpu_kernel_tests.sh OUTFILE  (PROCS, default 4; TEST_TIMEOUT_S, default 280)
# Writes each process's failures and summary to OUTFILE; exits non-zero where any test
# failed or did not run: no GPU, a collection error, nothing collected, a timeout.
set -uo pipefail
export TRITON_INTERPRET=0
out=$1
procs=${PROCS:-4}
timeout_s=${TEST_TIMEOUT_S:-280}
tmp=$(mktemp -d)
fail() { echo "kernel tests: $*" | tee "$out"; exit 1; }
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || fail "no GPU: nothing run"
python3 -m pytest -q --co -p no:cacheprovider tests/test_kernels_*.py >"$tmp/collect" 2>&1 \
  || fail "collection failed: $(tail -3 "$tmp/collect" | tr '\n' ' ')"
grep "::" "$tmp/collect" >"$tmp/ids" || fail "no tests collected"
pids=()
for ((i = 0; i < procs; i++)); do
  awk -v n="$procs" -v i="$i" 'NR % n == i' "$tmp/ids" >"$tmp/ids.$i"
  [ -s "$tmp/ids.$i" ] || continue
  mapfile -t ids <"$tmp/ids.$i"
  timeout "$timeout_s" python3 -m pytest -q --tb=short -p no:cacheprovider "${ids[@]}" >"$tmp/log.$i" 2>&1 &
  pids+=("$i:$!")
done
rc=0
echo "kernel tests, $(wc -l <"$tmp/ids") collected, in ${#pids[@]} processes:" >"$out"
for entry in "${pids[@]}"; do
  i=${entry%%:*}
  wait "${entry#*:}"
  code=$?
  [ "$code" -eq 0 ] || rc=1
  { grep -E "^(FAILED|ERROR)" "$tmp/log.$i"
    grep -E "^E " "$tmp/log.$i" | head -20  # what each failed assertion said
    if [ "$code" -eq 124 ]; then echo "process $i timed out after ${timeout_s} s: its tests unfinished"
    else tail -1 "$tmp/log.$i"; fi; } >>"$out"
done
cat "$out"
exit $rc
