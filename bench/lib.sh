# bench/lib.sh: what the benchmarks share (sourced by bench/online.sh, bench/serve.sh and
# the others). Needs $build set. Defines:
#   bench_need NAME [torch]   exits 2, naming NAME, unless $flame is built (and, with torch,
#                      $python can import torch); sets $python
#   bench_start NAME   checks the binaries, makes $work (a temp dir) and the cleanup that kills
#                      every pid in $pids and removes $work on exit
#   bench_broker       starts `flame broker` on a random loopback port with topic clicks (and
#                      clicks.dlq), sets $port
#   bench_flamed LOG ARGS...  starts flamed on that broker and topic with ARGS
#   bench_wait_http PORT      waits (60 s at most) until PORT answers /healthz
#   bench_metric PORT NAME    prints the value of metric NAME (no labels) from PORT's /metrics
#   bench_users_lua           writes $work/users.lua: wrk asks /v1/recommend for user-1 to
#                             user-$USERS (an environment variable of wrk's run) at random
flame="$build/flame"
flamed="$build/flamed"
python=/usr/bin/python3
pids=()

bench_need() {
  [ -x "$flame" ] || { echo "$1: $flame not built (./scripts/dev.sh build)" >&2; exit 2; }
  [ "${2:-}" != torch ] || "$python" -c 'import torch' 2>/dev/null ||
    { echo "$1: python3-torch missing (scripts/setup.sh --bench)" >&2; exit 2; }
}

bench_start() {
  [ -x "$flame" ] && [ -x "$flamed" ] || { echo "$1: build first (./scripts/dev.sh build)" >&2; exit 2; }
  work="$(mktemp -d)"
  # newest first, each waited for: the daemons drain while their broker is still up
  trap 'for ((i = ${#pids[@]} - 1; i >= 0; i--)); do { kill "${pids[i]}" && wait "${pids[i]}"; } 2>/dev/null || true; done; rm -rf "$work"' EXIT
}

bench_broker() {
  port=$((20000 + RANDOM % 20000))
  "$flame" broker --port "$port" --partitions 4 --topics clicks,clicks.dlq > "$work/broker-$port.out" 2>&1 &
  pids+=($!)
  sleep 1
}

bench_flamed() {
  local log=$1
  shift
  "$flamed" --kafka.bootstrap.servers=127.0.0.1:$port --stream.topic=clicks \
    --stream.static_membership=false \
    --stream.dead_letter_topic=clicks.dlq --api.listen=127.0.0.1 --log.stats_interval_s=30 "$@" \
    > "$log" 2>&1 &
  pids+=($!)
}

bench_wait_http() {
  for _ in $(seq 600); do curl -sf "127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "bench: nothing answers on port $1" >&2
  return 1
}

bench_metric() { curl -sf "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

bench_users_lua() {
  cat > "$work/users.lua" <<'LUA'
local users = tonumber(os.getenv("USERS") or "1000")
request = function()
  return wrk.format("GET", "/v1/recommend?user=user-" .. math.random(1, users) .. "&k=10")
end
LUA
}
