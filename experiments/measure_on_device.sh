#!/usr/bin/env bash
# On a lent GPU: install, run the kernel correctness tests on the real compiler, then the
# measurement sweep. Usage: experiments/measure_on_device.sh COMMIT NAME [measure options]
# Writes $OUT/NAME/{rows.csv,metadata.json,calibration.yaml,log.txt}.
set -uo pipefail
commit=$1; name=$2; shift 2
out=${OUT:-/tmp/sparq-out}/$name
mkdir -p "$out"
export PYTHONUNBUFFERED=1 SPARQ_PERF_COMMIT=$commit
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v WARNING
bash experiments/gpu_kernel_tests.sh "$out/kernel_tests.txt"
tests_rc=$?
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$out/log.txt"
python3 -m sparq_perf.cli measure --out "$out" "$@" 2>&1 | tee -a "$out/log.txt"
measure_rc=$?
# the sweep checks each kernel against its reference before timing it, so it runs either way;
# the call fails where the tests did
[ "$tests_rc" -eq 0 ] || echo "kernel tests failed: $out/kernel_tests.txt"
exit $(( tests_rc || measure_rc ))
