#!/usr/bin/env bash
# bench/ingest.sh: flamed's end-to-end ingest on the embedded broker (issue 4), one run.
#
# Builds (Release) and runs bench/ingest.c: ml-1m (1M events) replayed with string ids into
# a 32-partition topic on an in-process mock broker, then the real flamed drains it into a
# fresh RocksDB state (events/s from partition assignment until the group's committed
# offsets, which follow durable writes, reach the end; peak RSS; state size on disk), then a
# second daemon ingests the same stream produced live at --rate events/s (p99 latency from
# the message timestamp to the durable write). Appends the JSON line to
# bench/results/ingest.jsonl. Never run by CI.
#
# usage: bench/ingest.sh [--data FILE] [--rate N] [--build DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
data="$shared/data/ml-1m.txt"
rate=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/ingest.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target flamed flame_ingest_bench >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$here/results"
"$build/flame_ingest_bench" --data "$data" --flamed "$build/flamed" --workdir "$work" \
  --rate "$rate" | tee -a "$here/results/ingest.jsonl"
