#!/usr/bin/env bash
# Runs every fuzz target for N seconds from its committed seeds (fuzz/seeds/T),
# writing new inputs to fuzz/corpus/T (ignored by git). Fails on any crash.
set -euo pipefail
seconds="${1:-10}"
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "fuzz smoke: $t (${seconds}s)"
    seeds="seeds/$t"
    [ -d "$seeds" ] || seeds=""
    cargo fuzz run "$t" "corpus/$t" $seeds -- -max_total_time="$seconds" -print_final_stats=0 2>&1 | tail -n 3
done
echo "fuzz smoke: $(echo $targets | wc -w) targets, no crash"
