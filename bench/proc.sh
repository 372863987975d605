# bench/proc.sh: the process and probe helpers of the fault scripts (sourced by bench/faults.sh,
# bench/soak.sh and bench/repro.sh; no side effects when sourced). Every wait is bounded.
#   say MSG...                echo MSG to stdout and append it to $logf
#   now_ms                    the wall clock in ms;  secs A B: (B - A) ms in seconds, 2 decimals
#   alive PID                 running and not a zombie (kill -0 succeeds on an unreaped child)
#   stop_pid PID SECONDS      SIGCONT and SIGTERM, SIGKILL after SECONDS, then reap; sets $stop_rc
#   metric PORT NAME          the value of metric NAME (no labels) at PORT's /metrics, or empty
#   code URL                  the HTTP status of GET URL (2 s at most), or empty
#   port_free PORT; free_port a loopback port (with the next two) that nothing listens on
#   wait_for SECONDS CMD...   runs CMD every 0.1 s until it succeeds (0) or SECONDS pass (1)
#   assigned PORT, ready PORT, healthy PORT: partitions assigned, /readyz 200, /healthz 200
#   exited PID                no longer alive
say() { echo "$*" | tee -a "$logf"; }
now_ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1000}'; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ "$s" != Z* ]]; }
stop_pid() {
  stop_rc=0
  alive "$1" || { wait "$1" 2>/dev/null || stop_rc=$?; return 0; }
  kill -CONT "$1" 2>/dev/null || true
  kill -TERM "$1" 2>/dev/null || true
  local i
  for ((i = 0; i < $2 * 10; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1"; then
    echo "${0##*/}: pid $1 ignored SIGTERM for $2 s: SIGKILL" >&2
    kill -KILL "$1" 2>/dev/null
  fi
  wait "$1" 2>/dev/null || stop_rc=$?
}
metric() { curl -sf -m 2 "127.0.0.1:$1/metrics" 2>/dev/null | awk -v m="$2" '$1 == m {print $2}' || true; }
code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    port_free $p && port_free $((p + 1)) && port_free $((p + 2)) && { echo $p; return; }
  done
}
wait_for() {
  local end=$(($(now_ms) + $1 * 1000))
  shift
  while [ "$(now_ms)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
assigned() { [ "$(metric "$1" flamed_partitions_assigned)" -gt 0 ] 2>/dev/null; }
ready() { [ "$(code "127.0.0.1:$1/readyz")" = 200 ]; }
healthy() { [ "$(code "127.0.0.1:$1/healthz")" = 200 ]; }
exited() { ! alive "$1"; }
