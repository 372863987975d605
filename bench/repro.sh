#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through the trap, wait_for and eval
# bench/repro.sh: the literal reproductions of the eleven production failures of issue 26,
# rerun against a real (Release) flamed and the embedded broker (`flame broker`, one process,
# loopback only, 4 partitions per topic). Never run by CI. Each item starts its own flamed on
# its own state, topic and group, and records what it did, what was expected, what was
# observed and PASS / FAIL (item 4: MEASURED, no bar).
#
#  1. full state disk: a 4 MiB tmpfs as state.dir, filled to ~30 KB free by a filler file once
#     flamed is up, then at once 5,000 events with 190-byte user and item ids (kcat), 100
#     users. Watched 30 s: alive, /healthz, the log's pause / low-space / abort lines; then
#     the filler is deleted and the events in the users' histories counted (20 s at most).
#     Runs: the build's defaults (new code: state.min_free_mb=256, more than the whole disk,
#     so it pauses at once and cannot resume there); where the setting exists, also
#     state.min_free_mb=1 (the judged run; if the events are not stored 15 s after the filler
#     is gone, flamed is restarted, as the runbook says, and the histories counted again), and
#     state.min_free_mb=1 with the events 2 s after the filler (informational: the free-space
#     check, once a second, has seen the full disk before the first write).
#     PASS: alive and /healthz 200 after 30 s, a pause / low-space line in the log, and (the
#     min_free_mb=1 run where it exists) every event stored once space is back, no restart.
#  2. frozen disk: the state on a loop-mounted 256 MiB ext4 image (state.min_free_mb=16 where
#     it exists), 500 events/s ingest, `fsfreeze -f` for 20 s. /healthz and
#     /v1/recommend?user=user-1&k=10 asked every 100 ms each (2 s timeout) through the freeze:
#     p50/p99/max and failures; after `fsfreeze -u`, flamed_events_stored_total against the
#     producer's "sent" (60 s at most). PASS: no request failed, every event stored.
#  3. idle topic: --kafka.max.poll.interval.ms=8000 --kafka.session.timeout.ms=6000, otherwise
#     defaults; 3 events, then flamed_partitions_assigned every second for 60 s. PASS: never
#     below the assignment at the start, no MAXPOLL / "leaving group" line.
#  4. kill -9 and restart on the same state, 3 times: seconds until flamed_partitions_assigned
#     > 0 and /readyz 200 (90 s at most each), with stream.static_membership=false (where it
#     exists), kafka.session.timeout.ms=6000, kafka.heartbeat.interval.ms=500 (the embedded
#     broker does not implement static membership). MEASURED: the 6 s session timeout bounds
#     it on both builds; production's 45 s default is not what is measured.
#  5. shutdown with the broker gone: a broker of its own is kill -9'd (connections refused at
#     once), then in a second run SIGSTOPped (a hung broker: connections open, no answers);
#     1 s later flamed gets SIGTERM: seconds until it exits (SIGKILL at 70 s). Group settings
#     left at the build's defaults (session timeout 45 s, as in production). PASS: both
#     within stream.close_timeout_s + 3 s.
#  6. 1,024 silent TCP connections from 127.0.0.1 to the API port, nothing sent; then a fresh
#     client's GET /healthz from 127.0.0.1 and one from 127.0.0.2 (1 s timeout each); how many
#     of the silent ones are closed by api.header_timeout_ms + 2 s (5 + 2 s where the setting
#     does not exist), and a fresh client again then. PASS: the fresh 127.0.0.1 client gets an
#     HTTP answer (200, or a 503) within 1 s and then a clean close, not a reset, and every
#     silent connection flamed accepted is closed by then.
#  7. stale temp and corrupt snapshot: a first run (an untrained `flame init` anchor, training
#     off) writes the model dir; flamed stopped, a model-<v+5>.ckpt.tmp.3919 and a corrupt
#     (bytes flipped) model-<v+4>.ckpt are put there; flamed started again. PASS: the temp
#     file is gone, the corrupt one is in models/corrupt/, the log says both.
#  8. dead-letter gaps: a 1.1 MB message (over stream.max_message_bytes) and a small bad JSON
#     one on the events topic (kcat). PASS: the big one counted as too_large AND a (cut)
#     record of it on the dead-letter topic (kcat -C: sizes and headers); the /metrics lines
#     for dead-letter failures and Kafka errors are reported (present or not).
#  9. corrupt anchor: a first run (anchor imported, training off, 60 users' events) leaves
#     anchor-1 and model-1; anchor-1's bytes are flipped and flamed started without
#     model.anchor, training on (interval 2 s, bootstrap thresholds at their minimum, 1
#     epoch), 40 more users' events, watched for 30 s. PASS: no "bootstrapped" round, the
#     serving version moves only by promoted rounds, and the log says what it fell back to.
# 10. HTTP strictness, raw sockets (python3): HEAD /healthz pipelined with a GET (no body
#     bytes), 405 + Allow for DELETE /metrics, PUT /healthz, POST /readyz, 505 for HTTP/9.9,
#     400 for "Host : x", a folded header, bodies with trailing garbage, a duplicate key,
#     \u0000, a raw DEL byte, \u0085 and ids with %7F / %C2%85 in a query; 501 or 400 for
#     "Transfer-Encoding: gzip, chunked"; no body naming parser internals. Every status line
#     recorded. PASS: every case as expected.
# 11. admin token: a token file "ab\0cdefghijklmnop" (flamed must refuse to start; else
#     "Bearer ab" is tried on POST /v1/admin/pause-training), a valid one with mode 0666 (must
#     refuse), then a valid 0600 one: one correct Authorization header (200) and two (a wrong
#     one, then the right one: must be 400). PASS: all three as expected.
#
# Settings a build does not know (`flamed --dump-config` does not list them) are left out,
# so the old code runs every item too. Every wait has a deadline; a daemon that crashes is an
# outcome, not the end of the run.
#
# usage: bench/repro.sh [--build DIR] [--only N,...]
#   --build DIR   the build directory with flame and flamed (default: this checkout's build/)
#   --only N,...  run only these items (1-11), e.g. --only 1,6,10
# Needs root (tmpfs, loop mount, fsfreeze), kcat, curl, jq, python3.
# Output: a human summary on stdout and in bench/results/repro-<stamp>.log (one line per
# item: number, what was done, expected, observed, PASS / FAIL / MEASURED), one JSON object
# per item in bench/results/repro-<stamp>.jsonl (with "build": the short commit of the build's
# source tree), and the flamed logs that matter as bench/results/repro-<stamp>.<item>.flamed.log
# (head and tail when long). Exit status 0 when every item passed (or was measured), 1 when
# one failed, 2 on bad usage. A full run takes about 8 minutes (the old code up to 10).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift ;;
    --only) only="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 3,$p' "$0"; exit 0 ;;
    *) echo "bench/repro.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ -z "$only" || "$only" =~ ^([0-9]+,)*[0-9]+$ ]] || { echo "bench/repro.sh: --only N,... (1-11)" >&2; exit 2; }
for t in kcat curl jq python3; do
  command -v $t >/dev/null || { echo "bench/repro.sh: $t missing (scripts/setup.sh)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench/repro.sh: needs root (tmpfs, loop mount, fsfreeze)" >&2; exit 2; }
build="$(cd "$build" && pwd)"
flame="$build/flame"
flamed="$build/flamed"
{ [ -x "$flame" ] && [ -x "$flamed" ]; } || { echo "bench/repro.sh: no flame/flamed in $build (build first)" >&2; exit 2; }
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
rev=$(git -C "${src:-$root}" rev-parse --short HEAD 2>/dev/null || echo unknown)
py=$(command -v python3)

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
jsonl="$here/results/repro-$stamp.jsonl"
logf="$here/results/repro-$stamp.log"
work="$(mktemp -d)"
pids=()
mnts=()
frozen=""
failed=0

# Thaw first (a process blocked on a frozen disk cannot die), then every child, newest
# first, each stopped within 15 s, then the mounts and loop devices; then the logs are kept.
cleanup() {
  set +e
  [ -n "$frozen" ] && fsfreeze -u "$frozen"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}" 15; done
  for m in "${mnts[@]}"; do mountpoint -q "$m" && umount "$m"; done
  for f in "$work"/*.flamed.log; do
    [ -f "$f" ] || continue
    local out
    out="$here/results/repro-$stamp.$(basename "$f")"
    if [ "$(wc -l < "$f")" -gt 240 ]; then
      { head -n 120 "$f"; echo "... ($(wc -l < "$f") lines, middle left out) ..."; tail -n 120 "$f"; } > "$out"
    else
      cp "$f" "$out"
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=bench/proc.sh
. "$here/proc.sh"

note() { echo "  $*" | tee -a "$logf"; }
stored_ge() { [ "$(metric "$1" flamed_events_stored_total)" -ge "$2" ] 2>/dev/null; }
produced() { sed -nE 's/.*"sent":([0-9]+).*/\1/p' "$1" | tail -n 1; }
num() { [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?$ ]] && echo "$1" || echo null; }

# The settings this flamed knows ("section.key"), and their values in its dump
dump="$work/dump.ini"
"$flamed" --dump-config > "$dump" 2>&1 || true
knows() { [[ "$1" == kafka.* ]] || awk -v k="$1" '/^\[/ {s = substr($0, 2, length($0) - 2)}
  /^[a-z_.]+ *=/ {n = $1; sub(/ *=.*/, "", n); if (s "." n == k) f = 1} END {exit !f}' "$dump"; }
setting() { awk -v k="$1" '/^\[/ {s = substr($0, 2, length($0) - 2)}
  /^[a-z_.]+ *=/ {n = $1; sub(/ *=.*/, "", n); if (s "." n == k) {v = $0; sub(/^[^=]*= */, "", v); print v}}' "$dump"; }
# known KEY=VALUE...: the --KEY=VALUE options this flamed knows, one a line
known() {
  local kv
  for kv in "$@"; do knows "${kv%%=*}" && echo "--$kv"; done
  return 0
}

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# record N NAME OUTCOME WHAT EXPECTED OBSERVED [JSON]: the summary line and the JSON line
record() {
  local n=$1 name=$2 outcome=$3 what=$4 exp=$5 obs=$6 extra=${7:-"{}"}
  [ "$outcome" = FAIL ] && failed=1
  say "item $n ($name): $outcome"
  note "did:      $what"
  note "expected: $exp"
  note "observed: $obs"
  jq -cn --argjson item "$n" --arg name "$name" --arg outcome "$outcome" --arg what "$what" \
    --arg exp "$exp" --arg obs "$obs" --arg build "$rev" --arg dir "$build" \
    --arg stamp "$(date -u +%FT%TZ)" --argjson x "$extra" \
    '{item: $item, name: $name, build: $build, build_dir: $dir, outcome: $outcome, did: $what,
      expected: $exp, observed: $obs} + $x + {stamp: $stamp}' >> "$jsonl" ||
    echo "{\"item\":$n,\"build\":\"$rev\",\"outcome\":\"$outcome\",\"error\":\"bad extra json\"}" >> "$jsonl"
}
# loglines FILE REGEX [N]: the first N (4) matching lines, " | "-joined, trimmed
loglines() {
  { grep -avE '^(===|---) repro' "$1" 2>/dev/null | grep -aE "$2" || true; } | head -n "${3:-4}" | cut -c1-220 | paste -sd'|' - | sed 's/|/ | /g'
}

# --- the broker: every item's topics, created up front ---
topics=""
for t in t1a t1b t1c t2 t3 t4 t5 t6 t7 t8 t9 t10 t11; do topics+="$t,$t.dlq,"; done
start_broker() { # start_broker OUT: sets kport, bpid
  kport=$(free_port)
  "$flame" broker --port "$kport" --partitions 4 --topics "${topics%,}" > "$1" 2>&1 &
  bpid=$!
  pids+=("$bpid")
  wait_for 30 grep -q bootstrap "$1" || { cat "$1" >&2; exit 1; }
}
start_broker "$work/broker.out"
kport0=$kport
say "repro: build $build (commit $rev), broker 127.0.0.1:$kport0, $(date -u +%FT%TZ); results $jsonl"

# start_flamed LOG ARGS...: flamed on broker $kport, loopback API, admin API off unless ARGS
# say otherwise; sets $fpid
start_flamed() {
  local log=$1
  shift
  echo "=== repro: $(date -u +%FT%T.%3NZ) flamed $* ===" >> "$log"
  "$flamed" --kafka.bootstrap.servers="127.0.0.1:$kport" --api.listen=127.0.0.1 --api.admin_port=0 \
    "$@" >> "$log" 2>&1 &
  fpid=$!
  pids+=("$fpid")
}
"$flame" init --items 501 --out "$work/anchor.ckpt" > /dev/null
anchor=(--model.anchor="$work/anchor.ckpt" --model.anchor_item_ids='item-{}' --train.enabled=false)
mapfile -t group_fast < <(known stream.static_membership=false kafka.session.timeout.ms=6000 kafka.heartbeat.interval.ms=500)
# topic N: the item's topic, dead-letter topic and group
topic() { echo "--stream.topic=t$1" "--stream.dead_letter_topic=t$1.dlq" "--stream.group=g$1"; }

# The python helpers: raw HTTP, silent connections, a paced sampler, history counts
cat > "$work/h.py" <<'PY'
import json, resource, select, socket, sys, threading, time, urllib.parse

def conn(port, src=None, timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s

def exchange(port, data, timeout=2.0, src=None):
    """sends data, reads until EOF or timeout: (bytes, how it ended)"""
    try:
        s = conn(port, src, timeout)
    except OSError as e:
        return b"", "connect: %s" % e
    out, end = b"", "eof"
    try:
        s.sendall(data)
        t_end = time.time() + timeout
        while True:
            s.settimeout(max(0.01, t_end - time.time()))
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        end = "timeout"
    except ConnectionResetError:
        end = "reset"
    except OSError as e:
        end = "error: %s" % e
    s.close()
    return out, end

def status(b):
    return b.split(b"\r\n", 1)[0].decode("latin-1") if b else ""

def get(port, path, src=None, timeout=1.0):
    t0 = time.time()
    b, end = exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode(), timeout, src)
    return {"status": status(b), "end": end, "ms": round((time.time() - t0) * 1000, 1)}

def ready(socks, ev, timeout):
    """poll (select() stops at fd 1024): the sockets with ev (POLLIN / POLLOUT) or an error"""
    p = select.poll()
    by = {}
    for s in socks:
        p.register(s, ev | select.POLLERR | select.POLLHUP)
        by[s.fileno()] = s
    return [by[fd] for fd, _ in p.poll(int(timeout * 1000))]

def silent(port, n, wait_s):
    lim = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(lim[0], n + 256), max(lim[1], n + 256)))
    socks, errs, pending = [], 0, []
    t0 = time.time()
    for _ in range(n):  # non-blocking connects: a full accept queue cannot hold the run
        s = socket.socket(); s.setblocking(False)
        e = s.connect_ex(("127.0.0.1", port))
        if e in (0, 115):  # 0 or EINPROGRESS
            pending.append(s)
        else:
            errs += 1; s.close()
    deadline = time.time() + 3
    left = list(pending)
    while left and time.time() < deadline:
        w = ready(left, select.POLLOUT, max(0, deadline - time.time()))
        for s in w:
            left.remove(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                socks.append(s)
            else:
                errs += 1
    unconnected = len(left)
    opened = time.time() - t0
    time.sleep(0.3)
    def closed_states():
        answered, closed, reset = 0, 0, 0
        r = ready(socks, select.POLLIN, 0)
        for s in r:
            try:
                b = s.recv(65536)
                if b.startswith(b"HTTP/"):
                    answered += 1
                    while True:
                        try:
                            if not s.recv(65536):
                                break
                        except BlockingIOError:
                            break
                elif not b:
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                reset += 1
        return answered, closed, reset
    # sockets with an answer or a close by now were refused at accept (a cap)
    ans0, cl0, rs0 = closed_states()
    fresh_same = get(port, "/healthz")
    fresh_other = get(port, "/healthz", src="127.0.0.2")
    # which are still open at wait_s after the opening
    time.sleep(max(0, wait_s - (time.time() - t0)))
    # count every socket: readable with EOF/reset/answer = closed by now
    still, gone = 0, 0
    r = ready(socks, select.POLLIN, 0.2)
    rs = set(r)
    for s in socks:
        if s in rs:
            try:
                b = s.recv(65536)
                gone += 1
            except BlockingIOError:
                still += 1
            except OSError:
                gone += 1
        else:
            still += 1
    after = get(port, "/healthz")
    for s in socks + left:
        s.close()
    print(json.dumps({"opened": len(socks), "connect_errors": errs, "not_connected_in_3s": unconnected, "open_s": round(opened, 2),
        "refused_at_once_with_http": ans0, "closed_at_once": cl0, "reset_at_once": rs0,
        "fresh_127_0_0_1": fresh_same, "fresh_127_0_0_2": fresh_other,
        "checked_at_s": wait_s, "still_open": still, "closed_by_then": gone,
        "fresh_after": after}))

def sample(port, seconds, period=0.1):
    routes = {"healthz": "/healthz", "recommend": "/v1/recommend?user=user-1&k=10"}
    res = {}
    def run(name, path):
        lat, fails, codes = [], 0, {}
        t_end = time.time() + seconds
        nxt = time.time()
        while time.time() < t_end:
            t0 = time.time()
            r = get(port, path, timeout=2.0)
            ms = (time.time() - t0) * 1000
            code = r["status"][9:12] if r["status"].startswith("HTTP/") else r["end"]
            codes[code] = codes.get(code, 0) + 1
            if code == "200":
                lat.append(ms)
            else:
                fails += 1
                lat.append(ms)
            nxt = max(nxt + period, time.time())
            time.sleep(max(0, nxt - time.time()))
        lat.sort()
        pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
        res[name] = {"requests": len(lat), "failed": fails, "codes": codes,
                     "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 1) if lat else None}
    ts = [threading.Thread(target=run, args=kv) for kv in routes.items()]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps(res))

def histories(port, fmt, n):
    total, missing = 0, 0
    for u in range(n):
        uid = fmt % u
        r, end = exchange(port, b"GET /v1/users/%s/history HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % urllib.parse.quote(uid).encode(), 3.0)
        head, _, body = r.partition(b"\r\n\r\n")
        if status(r).startswith("HTTP/1.1 200"):
            try:
                total += len(json.loads(body)["events"])
            except Exception:
                missing += 1
        else:
            missing += 1
    print(total)

def strict(port):
    cases = []
    def case(name, data, expect, check=None):
        b, end = exchange(port, data, 2.0)
        st = status(b)
        code = st[9:12]
        _, _, body = b.partition(b"\r\n\r\n")
        leaks = [w for w in (b"on_headers_complete", b"on_url", b"on_body", b"llhttp", b"HPE_", b"http_parser", b"picohttp")
                 if w.lower() in b.lower()]
        ok = code in expect and not leaks
        extra = {}
        if check:
            ok2, extra = check(b)
            ok = ok and ok2
        cases.append(dict({"case": name, "status": st, "end": end, "expect": "|".join(expect), "ok": ok,
                           "body": body[:160].decode("latin-1"), "leaks": [w.decode() for w in leaks]}, **extra))
    def head_check(b):
        head, sep, rest = b.partition(b"\r\n\r\n")
        cl = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                cl = int(v.strip())
        second = status(rest)
        return (second.startswith("HTTP/1.1 200"), {"content_length": cl,
                "bytes_after_head_before_next": rest.find(b"HTTP/1.1") if b"HTTP/1.1" in rest else len(rest),
                "next_response": second})
    def allow_check(b):
        head = b.partition(b"\r\n\r\n")[0].lower()
        al = [l for l in head.split(b"\r\n") if l.startswith(b"allow:")]
        return (bool(al), {"allow": al[0].decode() if al else None})
    H = b"Host: x\r\nConnection: close\r\n"
    def post(body, path=b"/v1/recommend"):
        return b"POST " + path + b" HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    case("HEAD /healthz + pipelined GET", b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n" + H + b"\r\n", ["200"], head_check)
    case("DELETE /metrics", b"DELETE /metrics HTTP/1.1\r\n" + H + b"\r\n", ["405"], allow_check)
    case("PUT /healthz", b"PUT /healthz HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", ["405"], allow_check)
    case("POST /readyz", b"POST /readyz HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", ["405"], allow_check)
    case("GET /healthz HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", ["505"])
    case("space before colon (Host : x)", b"GET /healthz HTTP/1.1\r\nHost : x\r\nConnection: close\r\n\r\n", ["400"])
    case("folded header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n", ["400"])
    case("Transfer-Encoding: gzip, chunked", b"POST /v1/recommend HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", ["501", "400"])
    case("POST valid (sanity)", post(b'{"history":["item-1"],"k":10}'), ["200"])
    case("POST trailing garbage", post(b'{"history":["item-1"],"k":10} x'), ["400"])
    case("POST duplicate key", post(b'{"history":["item-1"],"k":10,"k":5}'), ["400"])
    case("POST \\u0000 in id", post(b'{"history":["item-1\\u0000x"],"k":10}'), ["400"])
    case("POST raw DEL 0x7f in id", post(b'{"history":["item-1\x7fx"],"k":10}'), ["400"])
    case("POST \\u007f in id", post(b'{"history":["item-1\\u007fx"],"k":10}'), ["400"])
    case("POST \\u0085 (C1) in id", post(b'{"history":["item-1\\u0085x"],"k":10}'), ["400"])
    case("POST raw C1 U+0085 (c2 85) in id", post(b'{"history":["item-1\xc2\x85x"],"k":10}'), ["400"])
    case("GET user=user%7F1", b"GET /v1/recommend?user=user%7F1&k=10 HTTP/1.1\r\n" + H + b"\r\n", ["400"])
    case("GET user=user%C2%851", b"GET /v1/recommend?user=user%C2%851&k=10 HTTP/1.1\r\n" + H + b"\r\n", ["400"])
    print(json.dumps(cases))

def admin(port, auths):
    """POST /v1/admin/pause-training with these Authorization values (each a header)"""
    hs = b"".join(b"Authorization: " + a.encode("latin-1") + b"\r\n" for a in auths)
    b, end = exchange(port, b"POST /v1/admin/pause-training HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n" + hs + b"\r\n", 3.0)
    _, _, body = b.partition(b"\r\n\r\n")
    print(json.dumps({"status": status(b), "end": end, "body": body[:160].decode("latin-1")}))

cmd = sys.argv[1]
if cmd == "silent": silent(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
elif cmd == "sample": sample(int(sys.argv[2]), float(sys.argv[3]))
elif cmd == "histories": histories(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
elif cmd == "strict": strict(int(sys.argv[2]))
elif cmd == "admin": admin(int(sys.argv[2]), sys.argv[3:])
PY
h() { timeout 120 "$py" "$work/h.py" "$@"; }

# ---------------------------------------------------------------------------------------
# 1. full state disk
ufmt='user-%0185d'
"$py" - "$work/big-ids.txt" <<'PY'
import sys, time
ts = int(time.time() * 1000)
with open(sys.argv[1], "w") as f:
    for n in range(5000):  # 100 users x 50 events, 190-byte ids, key<TAB>value
        u = "user-%0185d" % (n % 100)
        i = "item-%0185d" % (n * 7 % 1000)
        f.write('%s\t{"user":"%s","item":"%s","ts":%d}\n' % (u, u, i, ts + n))
PY
# disk_run TAG TOPIC HOLD RESUME GAP RESTART OPTS...: one run on a fresh 4 MiB tmpfs: the
# filler, GAP s, the 5,000 events, HOLD s watched, the filler deleted, RESUME s for the events
# to be stored, then (RESTART 1) a restart if they were not; sets the d_* results
disk_run() {
  local tag=$1 tp=$2 hold=$3 resume=$4 gap=$5 restart=$6
  shift 6
  local mnt="$work/mnt-$tag" log="$work/1-$tag.flamed.log" api
  mkdir -p "$mnt"
  mount -t tmpfs -o size=4m tmpfs "$mnt"
  mnts+=("$mnt")
  api=$(free_port)
  start_flamed "$log" --stream.topic="$tp" --stream.dead_letter_topic="$tp.dlq" --stream.group="g$tp" \
    --state.dir="$mnt/state" --api.port="$api" --train.enabled=false "${group_fast[@]}" "$@"
  local f=$fpid
  d_alive=0 d_health="" d_died="" d_pause="" d_before=null d_after=null d_restart=null d_free=""
  if ! wait_for 30 healthy "$api" || ! wait_for 30 assigned "$api"; then
    d_pause="not up or no partitions after 30 s: $(tail -n 3 "$log" | tr '\n' ' ' | cut -c1-300)"
    stop_pid "$f" 20; umount "$mnt" || true; return
  fi
  sleep 1
  local avail
  avail=$(df -B1 --output=avail "$mnt" | tail -n 1 | tr -d ' ')
  fallocate -l $((avail - 30 * 1024)) "$mnt/filler" 2>/dev/null ||
    head -c $((avail - 30 * 1024)) /dev/zero > "$mnt/filler" 2>/dev/null || true
  d_free=$(df -B1 --output=avail "$mnt" | tail -n 1 | tr -d ' ')
  echo "=== repro: filler written ($d_free bytes left), events in $gap s ===" >> "$log"
  sleep "$gap"
  timeout 60 kcat -P -b "127.0.0.1:$kport" -t "$tp" -K $'\t' -l "$work/big-ids.txt" 2> "$work/kcat-$tag.err" || true
  local t0 i
  t0=$(now_ms)
  for ((i = 0; i < hold * 10; i++)); do
    alive "$f" || { d_died=$(secs "$t0" "$(now_ms)"); break; }
    sleep 0.1
  done
  alive "$f" && d_alive=1
  d_health=$(code "127.0.0.1:$api/healthz")
  d_pause=$(loglines "$log" "paus|low (disk )?space|free space|No space|ENOSPC|Assertion|abort|IO error" 4)
  [ "$d_alive" = 1 ] && d_before=$(h histories "$api" "$ufmt" 100 2>/dev/null || echo null)
  rm -f "$mnt/filler"
  echo "=== repro: filler deleted ===" >> "$log"
  if alive "$f"; then
    wait_for "$resume" hist_is "$api" 5000 || true
    d_after=$(h histories "$api" "$ufmt" 100 2>/dev/null || echo null)
  fi
  d_resume=$(sed -n '/=== repro: filler deleted/,$p' "$log" > "$work/1-$tag.after"; loglines "$work/1-$tag.after" "resum|space back|error|warn" 3)
  if [ "$restart" = 1 ] && [ "$d_after" != 5000 ]; then # the runbook: restart once space is back
    stop_pid "$f" 20
    echo "=== repro: restart after the filler was deleted ===" >> "$log"
    start_flamed "$log" --stream.topic="$tp" --stream.dead_letter_topic="$tp.dlq" --stream.group="g$tp" \
      --state.dir="$mnt/state" --api.port="$api" --train.enabled=false "${group_fast[@]}" "$@"
    f=$fpid
    if wait_for 30 healthy "$api" && wait_for 30 assigned "$api"; then wait_for 30 hist_is "$api" 5000 || true; fi
    d_restart=$(h histories "$api" "$ufmt" 100 2>/dev/null || echo null)
  fi
  d_log_rocks=$(find "$mnt/state" -maxdepth 1 -name 'LOG*' 2>/dev/null | wc -l)
  stop_pid "$f" 20
  umount "$mnt" || true
}
hist_is() { [ "$(h histories "$1" "$ufmt" 100 2>/dev/null)" = "$2" ]; }

if want 1; then
  say "item 1: full state disk (4 MiB tmpfs, ~30 KB left, 5,000 events with 190-byte ids)"
  runs_json="[]" obs="" pass=1
  tags=(defaults)
  knows state.min_free_mb && tags+=(minfree1 minfree1-gap)
  for tag in "${tags[@]}"; do
    # TOPIC HOLD RESUME GAP RESTART, options
    case $tag in
      defaults) set -- t1a 30 20 0 0; extra=() ;;
      minfree1) set -- t1b 30 15 0 1; extra=(--state.min_free_mb=1) ;;
      minfree1-gap) set -- t1c 5 20 2 0; extra=(--state.min_free_mb=1) ;;
    esac
    hold=$2 gap=$4
    disk_run "$tag" "$@" ${extra[@]+"${extra[@]}"}
    note "run $tag (${extra[*]:-build defaults}; events ${gap} s after the filler): ${d_free:-?} B free after the filler; after $hold s: alive $d_alive${d_died:+ (died $d_died s after the events)}, /healthz ${d_health:-none}, events in the histories $d_before; filler deleted: $d_after$([ "$d_restart" != null ] && echo "; after a restart: $d_restart"); RocksDB LOG files on the state disk: ${d_log_rocks:-?}"
    note "  log: ${d_pause:-no pause / low-space / abort line}"
    note "  log after the filler was deleted: ${d_resume:-nothing}"
    runs_json=$(jq -c --arg tag "$tag" --arg opts "${extra[*]:-}" --argjson hold "$hold" --argjson gap "$gap" \
      --argjson alive "$d_alive" --argjson died "$(num "$d_died")" --arg health "$d_health" \
      --argjson before "$(num "$d_before")" --argjson after "$(num "$d_after")" \
      --argjson restart "$(num "$d_restart")" --argjson free "$(num "$d_free")" --arg log "$d_pause" \
      --arg rlog "$d_resume" --argjson nlog "$(num "${d_log_rocks:-x}")" \
      '. + [{run: $tag, options: $opts, events_after_filler_s: $gap, watched_s: $hold,
        free_bytes_after_filler: $free, alive: ($alive == 1), died_after_s: $died, healthz: $health,
        stored_before_filler_deleted: $before, stored_after_filler_deleted: $after,
        stored_after_restart: $restart, rocksdb_log_files_on_state_disk: $nlog, log: $log,
        log_after_filler_deleted: $rlog}]' <<< "$runs_json")
    paused=0; grep -qiE "paus|low (disk )?space" <<< "$d_pause" && paused=1
    case $tag in
      defaults)
        { [ "$d_alive" = 1 ] && [ "$d_health" = 200 ] && [ "$paused" = 1 ]; } || pass=0
        # without state.min_free_mb the default run is the whole test
        knows state.min_free_mb || [ "$d_after" = 5000 ] || pass=0 ;;
      minfree1)
        { [ "$d_alive" = 1 ] && [ "$d_health" = 200 ] && [ "$paused" = 1 ] && [ "$d_after" = 5000 ]; } || pass=0 ;;
    esac
    rs=""; [ "$d_restart" = null ] || rs=", $d_restart after a restart"
    obs+="$tag: alive $d_alive${d_died:+ (died after $d_died s)}, healthz ${d_health:-none}, pause/low-space line $paused, stored $d_before, $d_after after the filler was deleted$rs; "
  done
  record 1 full_disk "$([ $pass = 1 ] && echo PASS || echo FAIL)" \
    "4 MiB tmpfs state.dir, filler to ~30 KB free, 5,000 events (190-byte ids) via kcat right after (minfree1-gap: 2 s after, informational), watched; filler deleted; runs: ${tags[*]}" \
    "alive 30 s later, /healthz 200, a pause/low-space log line; after deleting the filler ingest resumes and every event is stored (new code: judged on the state.min_free_mb=1 run, the default 256 MiB being more than the disk)" \
    "${obs%; }" "{\"runs\": $runs_json}"
fi

# ---------------------------------------------------------------------------------------
# 2. frozen disk
if want 2; then
  say "item 2: frozen disk (loop-mounted ext4, fsfreeze -f for 20 s while ingesting)"
  mnt="$work/mnt-freeze" log="$work/2.flamed.log" why=""
  mkdir -p "$mnt"
  if ! command -v fsfreeze >/dev/null; then why="fsfreeze not installed"
  elif ! truncate -s 256M "$work/disk.img" || ! mkfs.ext4 -q -F "$work/disk.img" 2> "$work/mkfs.err"; then why="mkfs.ext4 failed: $(tail -n 1 "$work/mkfs.err")"
  elif ! mount -o loop "$work/disk.img" "$mnt" 2> "$work/mount.err"; then why="mount -o loop failed: $(tail -n 1 "$work/mount.err")"
  fi
  if [ -n "$why" ]; then
    record 2 frozen_disk FAIL "not run" "requests answered through a freeze" "skipped: $why" "{\"skipped\": $(jq -n --arg w "$why" '$w')}"
  else
    mnts+=("$mnt")
    api=$(free_port)
    mapfile -t o2 < <(known state.min_free_mb=16)
    # shellcheck disable=SC2046
    start_flamed "$log" $(topic 2) --state.dir="$mnt/state" --api.port="$api" "${anchor[@]}" "${group_fast[@]}" ${o2[@]+"${o2[@]}"}
    f=$fpid
    if ! wait_for 30 healthy "$api" || ! wait_for 30 assigned "$api"; then
      record 2 frozen_disk FAIL "flamed on the ext4 image" "up" "not up or no partitions after 30 s" "{}"
    else
      "$flame" synth --out "$work/freeze.txt" --users 750 --items 500 --mean-len 20 --seed 1 > /dev/null
      "$flame" produce --brokers "127.0.0.1:$kport" --topic t2 --data "$work/freeze.txt" --rate 500 \
        > "$work/freeze-produce.out" 2>&1 &
      prod=$!
      pids+=("$prod")
      sleep 3
      h sample "$api" 21 > "$work/freeze-sample.json" 2>/dev/null &
      samp=$!
      sleep 0.5
      s0=$(metric "$api" flamed_events_stored_total)
      froze=0
      fsfreeze -f "$mnt" && frozen=$mnt && froze=1
      sleep 20
      s1=$(metric "$api" flamed_events_stored_total)
      fsfreeze -u "$mnt"; frozen=""
      wait "$samp" || true
      alive_after=0; alive "$f" && alive_after=1
      total=$(awk '{n += NF - 1} END {print n}' "$work/freeze.txt")
      wait_for $((total / 500 + 60)) exited "$prod" || true
      stop_pid "$prod" 5
      sent=$(produced "$work/freeze-produce.out")
      wait_for 60 stored_ge "$api" "${sent:-999999999}" || true
      stored=$(metric "$api" flamed_events_stored_total)
      during="unknown (/metrics did not answer)"
      [ -n "$s0" ] && [ -n "$s1" ] && during=$((s1 - s0))
      samp_json=$(cat "$work/freeze-sample.json" 2>/dev/null); [ -n "$samp_json" ] || samp_json='{}'
      fails=$(jq '[.[].failed] | add // 1' <<< "$samp_json" || echo 1)
      desc=$(jq -r 'to_entries | map("\(.key): \(.value.requests) requests, failed \(.value.failed) \(.value.codes), p50 \(.value.p50_ms) ms, p99 \(.value.p99_ms) ms, max \(.value.max_ms) ms") | join("; ")' <<< "$samp_json" || echo "sampler output: $samp_json")
      outcome=FAIL
      [ "$froze" = 1 ] && [ "$fails" = 0 ] && [ -n "$sent" ] && [ "$sent" = "$stored" ] && outcome=PASS
      record 2 frozen_disk "$outcome" \
        "state on a 256 MiB loop ext4 (${o2[*]:-no min_free_mb}), flame produce at 500 events/s, fsfreeze -f 20 s; GET /healthz and /v1/recommend every 100 ms each, curl-like 2 s timeout" \
        "every request answered during the freeze; after fsfreeze -u all produced events stored" \
        "$desc; stored during the freeze $during; produced ${sent:-?}, stored ${stored:-?}; flamed alive after the freeze $alive_after; log: $(loglines "$log" "stall|waited|flow again|warn|error" 3)" \
        "$(jq -cn --argjson s "$samp_json" --argjson sent "$(num "${sent:-x}")" --argjson stored "$(num "${stored:-x}")" '{sampler: $s, sent: $sent, stored: $stored}')"
    fi
    stop_pid "$f" 20
    umount "$mnt" || true
  fi
fi

# ---------------------------------------------------------------------------------------
# 3. idle topic
if want 3; then
  say "item 3: idle topic (max.poll.interval.ms 8000, session.timeout.ms 6000), 60 s"
  api=$(free_port) log="$work/3.flamed.log"
  # shellcheck disable=SC2046
  start_flamed "$log" $(topic 3) --state.dir="$work/s3" --api.port="$api" \
    --kafka.max.poll.interval.ms=8000 --kafka.session.timeout.ms=6000
  f=$fpid
  if ! wait_for 30 assigned "$api"; then
    record 3 idle_topic FAIL "flamed up" "partitions" "no partitions 30 s after the start" "{}"
  else
    printf 'user-1\t{"user":"user-1","item":"item-1","ts":%s}\nuser-2\t{"user":"user-2","item":"item-2","ts":%s}\nuser-3\t{"user":"user-3","item":"item-3","ts":%s}\n' \
      "$(now_ms)" "$(now_ms)" "$(now_ms)" | timeout 20 kcat -P -b "127.0.0.1:$kport" -t t3 -K $'\t' 2>/dev/null || true
    wait_for 20 stored_ge "$api" 3 || true
    a0=$(metric "$api" flamed_partitions_assigned)
    n=0 zeros=0 below=0 amin=$a0 series=""
    end=$(($(now_ms) + 60000))
    while [ "$(now_ms)" -lt "$end" ]; do
      a=$(metric "$api" flamed_partitions_assigned)
      n=$((n + 1)); series+="${a:-x} "
      if [ -z "$a" ]; then below=$((below + 1)); alive "$f" || break
      else
        [ "$a" = 0 ] && zeros=$((zeros + 1))
        [ "$a" -lt "$a0" ] && below=$((below + 1))
        [ "$a" -lt "$amin" ] && amin=$a
      fi
      sleep 1
    done
    hits=$({ grep -avE '^(===|---) repro' "$log" | grep -aiE "MAXPOLL|leaving group|max.poll" || true; } | wc -l)
    outcome=FAIL; [ "$zeros" = 0 ] && [ "$below" = 0 ] && [ "$hits" = 0 ] && outcome=PASS
    record 3 idle_topic "$outcome" \
      "defaults + kafka.max.poll.interval.ms=8000, kafka.session.timeout.ms=6000; 3 events; flamed_partitions_assigned every 1 s for 60 s" \
      "never 0 (never below the start), no MAXPOLL line" \
      "assigned at start ${a0:-?}; $n samples: $zeros at 0, $below below the start (min $amin); MAXPOLL/leaving-group lines: $hits $(loglines "$log" "MAXPOLL|leaving group|max.poll" 2)" \
      "$(jq -cn --argjson n "$n" --argjson z "$zeros" --argjson b "$below" --argjson h "$hits" --arg s "$series" '{samples: $n, zero_samples: $z, below_start: $b, maxpoll_lines: $h, series: $s}')"
  fi
  stop_pid "$f" 20
fi

# ---------------------------------------------------------------------------------------
# 4. partitions after kill -9
if want 4; then
  say "item 4: kill -9 and restart on the same state, 3 runs (${group_fast[*]})"
  api=$(free_port) log="$work/4.flamed.log"
  # shellcheck disable=SC2207
  args4=($(topic 4) --state.dir="$work/s4" --api.port="$api" "${anchor[@]}" "${group_fast[@]}")
  "$flame" synth --out "$work/restart.txt" --users 250 --items 500 --mean-len 20 --seed 2 > /dev/null
  start_flamed "$log" "${args4[@]}"
  timeout 60 "$flame" produce --brokers "127.0.0.1:$kport" --topic t4 --data "$work/restart.txt" > "$work/restart-produce.out" 2>&1 || true
  sent=$(produced "$work/restart-produce.out")
  if ! wait_for 60 ready "$api" || ! wait_for 60 stored_ge "$api" "${sent:-999999999}"; then
    record 4 restart_after_kill9 FAIL "flamed up with the events" "ready" "not ready or not every event stored 60 s after the start" "{}"
  else
    runs4="[]" obs=""
    for i in 1 2 3; do
      kill -KILL "$fpid"; wait "$fpid" 2>/dev/null || true
      echo "--- repro: run $i: kill -9 at $(date -u +%FT%T.%3NZ), restart ---" >> "$log"
      t0=$(now_ms)
      start_flamed "$log" "${args4[@]}"
      ta=-1 tr=-1
      end=$((t0 + 90000))
      while [ "$(now_ms)" -lt "$end" ]; do
        [ "$ta" = -1 ] && assigned "$api" && ta=$(secs "$t0" "$(now_ms)")
        [ "$tr" = -1 ] && ready "$api" && tr=$(secs "$t0" "$(now_ms)")
        [ "$ta" != -1 ] && [ "$tr" != -1 ] && break
        alive "$fpid" || break
        sleep 0.1
      done
      obs+="run $i: assigned ${ta} s, readyz ${tr} s; "
      runs4=$(jq -c --argjson a "$ta" --argjson r "$tr" '. + [{assigned_s: (if $a < 0 then null else $a end), ready_s: (if $r < 0 then null else $r end)}]' <<< "$runs4")
    done
    record 4 restart_after_kill9 MEASURED \
      "kill -9 a running flamed, restart on the same state, 3 runs; ${group_fast[*]} (default session timeout is 45 s: production's 44-101 s is not what is measured)" \
      "measured, no bar here: seconds until flamed_partitions_assigned > 0 and /readyz 200 (the 6 s session timeout bounds it on both builds)" \
      "${obs%; }" "{\"runs\": $runs4}"
  fi
  stop_pid "$fpid" 20
fi

# ---------------------------------------------------------------------------------------
# 5. shutdown with the broker gone: kill -9 (connections refused at once) and SIGSTOP (a hung
# broker: connections open, nothing answers), each with a broker of its own
if want 5; then
  say "item 5: SIGTERM with the broker gone (kill -9, then SIGSTOP)"
  ct=$(setting stream.close_timeout_s); ct=${ct:-10}
  pass5=1 obs5="" runs5="[]"
  for how in kill9 sigstop; do
    start_broker "$work/broker5-$how.out"
    b5=$bpid
    api=$(free_port) log="$work/5-$how.flamed.log"
    # shellcheck disable=SC2046
    start_flamed "$log" $(topic 5) --stream.group="g5$how" \
      --state.dir="$work/s5-$how" --api.port="$api" "${anchor[@]}"
    f=$fpid
    if ! wait_for 30 assigned "$api"; then
      pass5=0 obs5+="$how: no partitions 30 s after the start; "
      stop_pid "$f" 20; stop_pid "$b5" 5
      continue
    fi
    if [ "$how" = kill9 ]; then kill -KILL "$b5"; wait "$b5" 2>/dev/null || true; else kill -STOP "$b5"; fi
    sleep 1
    t0=$(now_ms)
    kill -TERM "$f"
    wait_for 70 exited "$f" || true
    dt=$(secs "$t0" "$(now_ms)")
    killed=0
    if alive "$f"; then kill -KILL "$f"; killed=1; fi
    rc5=0; wait "$f" 2>/dev/null || rc5=$?
    [ "$how" = sigstop ] && { kill -KILL "$b5" 2>/dev/null || true; wait "$b5" 2>/dev/null || true; }
    if [ "$killed" = 1 ] || ! awk -v d="$dt" -v b="$ct" 'BEGIN {exit !(d <= b + 3)}'; then pass5=0; fi
    k=""; [ "$killed" = 0 ] || k=" (still running at 70 s: SIGKILL)"
    obs5+="$how: exited after $dt s$k, exit status $rc5 [$(loglines "$log" "did not|close|stopp" 3)]; "
    runs5=$(jq -c --arg how "$how" --argjson dt "$dt" --argjson k "$killed" --argjson rc "$rc5" \
      '. + [{broker: $how, exit_s: $dt, sigkilled: ($k == 1), exit_status: $rc}]' <<< "$runs5")
  done
  record 5 shutdown_broker_gone "$([ $pass5 = 1 ] && echo PASS || echo FAIL)" \
    "flamed running; its broker kill -9'd (run kill9) or SIGSTOPped (run sigstop, a hung broker), 1 s later SIGTERM to flamed" \
    "exits within stream.close_timeout_s ($ct s) + 3 s in both runs" \
    "${obs5%; }" "{\"close_timeout_s\": $(num "$ct"), \"runs\": $runs5}"
  kport=$kport0
fi

# ---------------------------------------------------------------------------------------
# 6. 1,024 silent connections
if want 6; then
  say "item 6: 1,024 silent TCP connections from one peer"
  api=$(free_port) log="$work/6.flamed.log"
  ht=$(setting api.header_timeout_ms); ht_known=1
  [ -n "$ht" ] || { ht=5000; ht_known=0; }
  wait6=$(awk -v t="$ht" 'BEGIN {print t / 1000 + 2}')
  # shellcheck disable=SC2046
  start_flamed "$log" $(topic 6) --state.dir="$work/s6" --api.port="$api" "${anchor[@]}" "${group_fast[@]}"
  f=$fpid
  if ! wait_for 30 healthy "$api"; then
    record 6 silent_connections FAIL "flamed up" "healthz" "not up after 30 s" "{}"
  else
    j6=$(h silent "$api" 1024 "$wait6" 2> "$work/silent.err" || true)
    [ -n "$j6" ] || j6="{\"error\": $(jq -Rs . < "$work/silent.err")}"
    same=$(jq -r '.fresh_127_0_0_1.status // ""' <<< "$j6")
    same_ms=$(jq -r '.fresh_127_0_0_1.ms // 9999' <<< "$j6")
    still=$(jq -r '.still_open // -1' <<< "$j6")
    outcome=FAIL
    same_end=$(jq -r '.fresh_127_0_0_1.end // ""' <<< "$j6" || true)
    [[ "$same" =~ ^HTTP/1\.[01]\ (200|503) ]] && [ "$same_end" = eof ] && awk -v m="$same_ms" 'BEGIN {exit !(m <= 1000)}' && [ "$still" = 0 ] && outcome=PASS
    record 6 silent_connections "$outcome" \
      "1,024 TCP connections to the API from 127.0.0.1, nothing sent; fresh GET /healthz (1 s timeout) from 127.0.0.1 and from 127.0.0.2; open ones counted at ${wait6} s (api.header_timeout_ms $ht$([ $ht_known = 0 ] && echo ': not a setting of this build, 5000 assumed')+2 s)" \
      "the fresh 127.0.0.1 client gets 200 or an HTTP 503 within 1 s, then a clean close (not a reset or a timeout); every silent connection closed after the header timeout" \
      "$(jq -r '"opened \(.opened) (connect errors \(.connect_errors)); answered with HTTP at once \(.refused_at_once_with_http), closed at once \(.closed_at_once), reset \(.reset_at_once); fresh 127.0.0.1: \(.fresh_127_0_0_1.status // "-") [\(.fresh_127_0_0_1.end)] in \(.fresh_127_0_0_1.ms) ms; fresh 127.0.0.2: \(.fresh_127_0_0_2.status // "-") [\(.fresh_127_0_0_2.end)] in \(.fresh_127_0_0_2.ms) ms; at \(.checked_at_s) s: \(.still_open) still open, \(.closed_by_then) closed; fresh client then: \(.fresh_after.status // "-") [\(.fresh_after.end)]"' <<< "$j6" 2>/dev/null || echo "$j6")" \
      "$(jq -c '{silent: .}' <<< "$j6" 2>/dev/null || echo '{}')"
  fi
  stop_pid "$f" 20
fi

# ---------------------------------------------------------------------------------------
# flip FILE: a copy of the checkpoint with bytes in its middle flipped (a CRC failure)
flip() {
  "$py" - "$1" "$2" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for i in range(len(b) // 2, min(len(b), len(b) // 2 + 64)):
    b[i] ^= 0xFF
open(sys.argv[2], "wb").write(bytes(b))
PY
}
# first_run LOG STATE PORT N ARGS...: flamed with an anchor until its model dir holds a
# model-*.ckpt, then stopped
first_run() {
  local log=$1 st=$2 api=$3 n=$4
  shift 4
  # shellcheck disable=SC2046
  start_flamed "$log" $(topic "$n") --state.dir="$st" --api.port="$api" "${anchor[@]}" "${group_fast[@]}" "$@"
  wait_for 30 healthy "$api" || true
  # shellcheck disable=SC2016
  wait_for 20 eval 'compgen -G "$st/models/model-*.ckpt" > /dev/null' || true
}

# 7. stale temp files and a corrupt snapshot
if want 7; then
  say "item 7: a stale snapshot temp file and a corrupt snapshot at start"
  api=$(free_port) log="$work/7.flamed.log" st="$work/s7"
  first_run "$log" "$st" "$api" 7
  stop_pid "$fpid" 20
  md="$st/models"
  before=$(find "$md" -maxdepth 1 -type f -printf '%f\n' 2>/dev/null | sort | paste -sd' ' -)
  m1=$(compgen -G "$md/model-*.ckpt" | sort | tail -n 1 || true)
  if [ -z "$m1" ]; then
    record 7 stale_temp_corrupt FAIL "first run" "a model dir" "no model-*.ckpt in $md after the first run ($before)" "{}"
  else
    v=$(basename "$m1" .ckpt); v=$((10#${v#model-}))
    tmpf=$(printf '%s/model-%020d.ckpt.tmp.3919' "$md" $((v + 5)))
    bad=$(printf '%s/model-%020d.ckpt' "$md" $((v + 4)))
    head -c 100000 "$m1" > "$tmpf"
    flip "$m1" "$bad"
    # shellcheck disable=SC2046
    start_flamed "$log" $(topic 7) --state.dir="$st" --api.port="$api" "${anchor[@]}" "${group_fast[@]}"
    f=$fpid
    wait_for 30 healthy "$api" || true
    sleep 1
    after=$(cd "$md" && find . -type f | sed 's|^\./||' | sort | paste -sd' ' -)
    ver=$(metric "$api" flamed_model_version)
    q=$(metric "$api" flamed_model_quarantined_total)
    tmp_gone=0; [ -e "$tmpf" ] || tmp_gone=1
    moved=0; [ -e "$md/corrupt/$(basename "$bad")" ] && [ ! -e "$bad" ] && moved=1
    said=$(loglines "$log" "tmp\.3919|$(basename "$bad")|corrupt|not usable|skipp" 4)
    outcome=FAIL
    [ "$tmp_gone" = 1 ] && [ "$moved" = 1 ] && grep -q "tmp.3919" <<< "$said" && grep -qi "corrupt" <<< "$said" && outcome=PASS
    record 7 stale_temp_corrupt "$outcome" \
      "first run wrote $before; flamed stopped; added $(basename "$tmpf") (100 KB) and a corrupt $(basename "$bad") (64 bytes flipped); started again" \
      "temp file removed, corrupt one moved into models/corrupt/, the log says so" \
      "temp removed $tmp_gone, corrupt moved aside $moved; model dir now: $after; serving version ${ver:-?}, flamed_model_quarantined_total ${q:-absent}; log: ${said:-nothing about them}" \
      "$(jq -cn --argjson t "$tmp_gone" --argjson m "$moved" --arg a "$after" --arg b "$before" '{temp_removed: ($t == 1), corrupt_moved: ($m == 1), dir_before: $b, dir_after: $a}')"
    stop_pid "$f" 20
  fi
fi

# ---------------------------------------------------------------------------------------
# 8. dead-letter gaps
if want 8; then
  say "item 8: a 1.1 MB event and the dead-letter topic"
  api=$(free_port) log="$work/8.flamed.log"
  # shellcheck disable=SC2046
  start_flamed "$log" $(topic 8) --state.dir="$work/s8" --api.port="$api" "${anchor[@]}" "${group_fast[@]}"
  f=$fpid
  if ! wait_for 30 assigned "$api"; then
    record 8 dead_letter FAIL "flamed up" "partitions" "no partitions after 30 s" "{}"
  else
    "$py" - "$work/big.msg" <<'PY'
import sys, time
pad = "x" * (1100 * 1024)
open(sys.argv[1], "w").write('user-1\t{"user":"user-1","item":"item-1","ts":%d,"pad":"%s"}\nuser-2\t{"user":"user-2",\n' % (time.time() * 1000, pad))
PY
    timeout 30 kcat -P -b "127.0.0.1:$kport" -t t8 -K $'\t' -X message.max.bytes=2000000 -l "$work/big.msg" 2> "$work/kcat8.err" || true
    # shellcheck disable=SC2016
    wait_for 20 eval '[ "$(metric "$api" flamed_events_consumed_total)" -ge 2 ] 2>/dev/null' || true
    sleep 3
    tl=$(metric "$api" 'flamed_events_rejected_total{reason="too_large"}')
    bj=$(metric "$api" 'flamed_events_rejected_total{reason="bad_json"}')
    dl=$(metric "$api" flamed_dead_letter_total)
    dlf=$(metric "$api" flamed_dead_letter_failed_total)
    dlt=$(metric "$api" flamed_dead_letter_truncated_total)
    ke=$(metric "$api" flamed_kafka_errors_total)
    timeout 15 kcat -C -b "127.0.0.1:$kport" -t t8.dlq -o beginning -e -q -f '%S bytes, headers: %h\n' > "$work/dlq.out" 2> "$work/dlq.err" || true
    ndlq=$(wc -l < "$work/dlq.out")
    bigdlq=$(awk '$1 > 60000' "$work/dlq.out" | wc -l)
    dlqdesc=$(cut -c1-260 "$work/dlq.out" | paste -sd'|' - | sed 's/|/ | /g')
    outcome=FAIL
    [ "${tl:-0}" -ge 1 ] 2>/dev/null && [ "$bigdlq" -ge 1 ] && outcome=PASS
    record 8 dead_letter "$outcome" \
      "a 1,126,4xx-byte JSON event (pad field) and a 20-byte bad JSON one on the events topic (kcat, message.max.bytes 2000000); the dead-letter topic read back with kcat -C" \
      "the big one counted too_large AND a (cut) record of it on the dead-letter topic; /metrics has dead-letter failure and Kafka error counters" \
      "too_large ${tl:-absent}, bad_json ${bj:-absent}; flamed_dead_letter_total ${dl:-absent}, _failed_total ${dlf:-absent}, _truncated_total ${dlt:-absent}, flamed_kafka_errors_total ${ke:-absent}; dead-letter records: $ndlq (${bigdlq} of the big one): ${dlqdesc:-none}; log: $(loglines "$log" "dead|too large|too_large|reject|MSG_SIZE" 3)" \
      "$(jq -cn --argjson tl "$(num "${tl:-x}")" --argjson n "$ndlq" --argjson big "$bigdlq" --argjson dlf "$(num "${dlf:-x}")" --argjson ke "$(num "${ke:-x}")" --argjson dlt "$(num "${dlt:-x}")" --arg recs "$dlqdesc" \
        '{too_large: $tl, dlq_records: $n, dlq_records_of_big: $big, dead_letter_failed_total: $dlf, dead_letter_truncated_total: $dlt, kafka_errors_total: $ke, dlq: $recs}')"
  fi
  stop_pid "$f" 20
fi

# ---------------------------------------------------------------------------------------
# 9. corrupt anchor
if want 9; then
  say "item 9: a corrupt anchor at start, a valid serving snapshot"
  api=$(free_port) log="$work/9.flamed.log" st="$work/s9"
  "$flame" synth --out "$work/s9a.txt" --users 60 --items 500 --mean-len 10 --seed 4 > /dev/null
  "$flame" synth --out "$work/s9b.txt" --users 40 --items 500 --mean-len 10 --seed 5 > /dev/null
  first_run "$log" "$st" "$api" 9
  timeout 60 "$flame" produce --brokers "127.0.0.1:$kport" --topic t9 --data "$work/s9a.txt" > "$work/s9a.out" 2>&1 || true
  wait_for 30 stored_ge "$api" "$(produced "$work/s9a.out")" || true
  stop_pid "$fpid" 20
  md="$st/models"
  before=$(find "$md" -maxdepth 1 -type f -printf '%f\n' 2>/dev/null | sort | paste -sd' ' -)
  a1=$(compgen -G "$md/anchor-*.ckpt" | sort | tail -n 1 || true)
  if [ -z "$a1" ]; then
    record 9 corrupt_anchor FAIL "first run" "an anchor in the model dir" "no anchor-*.ckpt in $md ($before)" "{}"
  else
    flip "$a1" "$work/a.bad" && cp "$work/a.bad" "$a1"
    echo "=== repro item 9: $(basename "$a1") corrupted; start without model.anchor, training on ===" >> "$log"
    # shellcheck disable=SC2046
    start_flamed "$log" $(topic 9) --state.dir="$st" --api.port="$api" "${group_fast[@]}" \
      --train.enabled=true --train.interval_s=2 --train.bootstrap_min_users=10 \
      --train.bootstrap_min_events=100 --train.bootstrap_epochs=1 --train.min_users=1
    f=$fpid
    wait_for 30 healthy "$api" || true
    v0=$(metric "$api" flamed_model_version)
    timeout 60 "$flame" produce --brokers "127.0.0.1:$kport" --topic t9 --data "$work/s9b.txt" > /dev/null 2>&1 || true
    vs="" end=$(($(now_ms) + 30000))
    while [ "$(now_ms)" -lt "$end" ]; do
      vs+="$(metric "$api" flamed_model_version) "
      alive "$f" || break
      sleep 1
    done
    v1=$(metric "$api" flamed_model_version)
    boot=$(metric "$api" 'flamed_train_rounds_total{outcome="bootstrapped"}')
    prom=$(metric "$api" 'flamed_train_rounds_total{outcome="promoted"}')
    av=$(metric "$api" flamed_anchor_version)
    after=$(cd "$md" && find . -type f | sed 's|^\./||' | sort | paste -sd' ' -)
    # a line after the restart marker only
    said=$(sed -n '/repro item 9: .* corrupted/,$p' "$log" > "$work/9b.log"; loglines "$work/9b.log" "anchor|bootstrap|serving model|fall|not usable|corrupt" 6)
    outcome=FAIL
    if [ "${boot:-0}" = 0 ] && [ -n "$v0" ] && [ -n "$v1" ] && [ $((v1 - v0)) -le "${prom:-0}" ] &&
       grep -qiE "anchor" <<< "$said" && ! grep -qi "bootstrap: pretraining" "$work/9b.log"; then outcome=PASS; fi
    record 9 corrupt_anchor "$outcome" \
      "first run (anchor imported, training off, 60 users) left $before; $(basename "$a1") corrupted (64 bytes flipped); restarted without model.anchor, training on (interval 2 s, bootstrap at 10 users / 100 events, 1 epoch), 40 more users, watched 30 s" \
      "falls back to an older anchor or the serving snapshot, says so in the log; the serving version is not replaced by an ungated (bootstrapped) one" \
      "serving version at start ${v0:-?}, after 30 s ${v1:-?} (series: ${vs% }); rounds bootstrapped ${boot:-0}, promoted ${prom:-0}; anchor version ${av:-?}; model dir: $after; log: ${said:-none}" \
      "$(jq -cn --argjson v0 "$(num "${v0:-x}")" --argjson v1 "$(num "${v1:-x}")" --argjson b "$(num "${boot:-0}")" --argjson p "$(num "${prom:-0}")" --argjson av "$(num "${av:-x}")" --arg s "$vs" \
        '{version_start: $v0, version_end: $v1, bootstrapped_rounds: $b, promoted_rounds: $p, anchor_version: $av, versions: $s}')"
    stop_pid "$f" 20
  fi
fi

# ---------------------------------------------------------------------------------------
# 10. HTTP strictness
if want 10; then
  say "item 10: HTTP strictness (raw sockets)"
  api=$(free_port) log="$work/10.flamed.log"
  # shellcheck disable=SC2046
  start_flamed "$log" $(topic 10) --state.dir="$work/s10" --api.port="$api" "${anchor[@]}" "${group_fast[@]}"
  f=$fpid
  if ! wait_for 30 healthy "$api"; then
    record 10 http_strict FAIL "flamed up" "healthz" "not up after 30 s" "{}"
  else
    j10=$(h strict "$api" 2> "$work/strict.err" || true)
    [ -n "$j10" ] || j10='[]'
    nbad=$(jq '[.[] | select(.ok | not)] | length' <<< "$j10")
    ncase=$(jq 'length' <<< "$j10")
    jq -r '.[] | "    \(if .ok then "ok  " else "BAD " end) \(.case): \(.status) [\(.end)] (expected \(.expect))\(if .allow then ", " + .allow elif .allow == null and (.expect == "405") then ", no Allow" else "" end)\(if .next_response then ", Content-Length \(.content_length), \(.bytes_after_head_before_next) bytes before the next response: \(.next_response)" else "" end)\(if (.leaks | length) > 0 then ", body names \(.leaks)" else "" end)\(if .ok | not then ", body: " + (.body | .[0:100] | gsub("\r?\n"; "\\n")) else "" end)"' <<< "$j10" | tee -a "$logf"
    outcome=FAIL; [ "$nbad" = 0 ] && [ "$ncase" -gt 0 ] && outcome=PASS
    record 10 http_strict "$outcome" \
      "$ncase raw-socket requests (listed above)" \
      "HEAD without a body, 405+Allow, 505, 400s, 501/400 for gzip,chunked, 400 for bad bodies and ids; no parser internals in any body" \
      "$((ncase - nbad)) of $ncase as expected; not: $(jq -r '[.[] | select(.ok | not) | "\(.case) -> \(.status // "") [\(.end)]"] | join("; ")' <<< "$j10")" \
      "$(jq -c '{cases: .}' <<< "$j10")"
  fi
  stop_pid "$f" 20
fi

# ---------------------------------------------------------------------------------------
# 11. admin token
if want 11; then
  say "item 11: admin token file checks and two Authorization headers"
  api=$(free_port) adm=$(free_port) log="$work/11.flamed.log"
  while [ "$adm" = "$api" ] || [ "$adm" = $((api + 1)) ]; do adm=$(free_port); done
  # tok_run TOKENFILE: flamed with it; sets t_exit (exited within 10 s: 1), t_rc
  tok_run() {
    echo "=== repro item 11: token file $(basename "$1") ($(stat -c %a "$1")) ===" >> "$log"
    # shellcheck disable=SC2046
    start_flamed "$log" $(topic 11) --state.dir="$work/s11" --api.port="$api" "${anchor[@]}" "${group_fast[@]}" \
      --api.admin_port="$adm" --api.admin_token_file="$1"
    t_exit=0 t_rc=""
    local i
    for ((i = 0; i < 50; i++)); do
      alive "$fpid" || break
      healthy "$api" && break
      sleep 0.2
    done
    if ! alive "$fpid"; then t_exit=1; t_rc=0; wait "$fpid" 2>/dev/null || t_rc=$?; fi
  }
  printf 'ab\0cdefghijklmnop' > "$work/tok-nul"; chmod 600 "$work/tok-nul"
  tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$tok" > "$work/tok-666"; chmod 666 "$work/tok-666"
  printf '%s\n' "$tok" > "$work/tok-600"; chmod 600 "$work/tok-600"
  tok_run "$work/tok-nul"
  nul_exit=$t_exit nul_rc=$t_rc nul_ab=""
  if [ "$t_exit" = 0 ]; then
    # shellcheck disable=SC2016
    wait_for 5 eval '! port_free "$adm"' || true
    nul_ab=$(h admin "$adm" "Bearer ab" | jq -r '.status + " [" + .end + "]"' || true)
    stop_pid "$fpid" 20
  fi
  nul_log=$(loglines "$log" "token" 2)
  tok_run "$work/tok-666"
  w_exit=$t_exit w_rc=$t_rc w_ok=""
  if [ "$t_exit" = 0 ]; then
    # shellcheck disable=SC2016
    wait_for 5 eval '! port_free "$adm"' || true
    w_ok=$(h admin "$adm" "Bearer $tok" | jq -r '.status' || true)
    stop_pid "$fpid" 20
  fi
  w_log=$(sed -n '/tok-666/,$p' "$log" > "$work/11w.log"; loglines "$work/11w.log" "token" 2)
  tok_run "$work/tok-600"
  one="" two=""
  if [ "$t_exit" = 0 ]; then
    # shellcheck disable=SC2016
    wait_for 5 eval '! port_free "$adm"' || true
    one=$(h admin "$adm" "Bearer $tok" | jq -r '.status + " [" + .end + "]"' || true)
    two=$(h admin "$adm" "Bearer wrong-token-000000" "Bearer $tok" | jq -r '.status + " " + .body' || true)
    stop_pid "$fpid" 20
  fi
  outcome=PASS
  [ "$nul_exit" = 1 ] || outcome=FAIL
  [ "$w_exit" = 1 ] || outcome=FAIL
  [[ "$one" =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]] || outcome=FAIL
  [[ "$two" == "HTTP/1."?" 400 "* ]] || outcome=FAIL
  record 11 admin_token "$outcome" \
    "token file 'ab\\0cdefghijklmnop' (0600); a valid token in a 0666 file; a valid 0600 one with POST /v1/admin/pause-training, one Authorization header, then two (wrong, right)" \
    "NUL token refused at startup; 0666 refused at startup; one header 2xx; two headers 400" \
    "NUL token: $([ "$nul_exit" = 1 ] && echo "refused (exit $nul_rc)" || echo "started; 'Bearer ab' got ${nul_ab:-?}") [${nul_log:-no token line}]; 0666: $([ "$w_exit" = 1 ] && echo "refused (exit $w_rc)" || echo "started; the token got ${w_ok:-?}") [${w_log:-no token line}]; one header: ${one:-not run}; two headers: ${two:-not run}" \
    "$(jq -cn --argjson n "$nul_exit" --arg ab "$nul_ab" --argjson w "$w_exit" --arg one "$one" --arg two "$two" '{nul_refused: ($n == 1), nul_bearer_ab: $ab, world_writable_refused: ($w == 1), one_header: $one, two_headers: $two}')"
fi

unknown=""
for k in state.min_free_mb state.write_queue state.rocksdb_log_dir stream.static_membership stream.close_timeout_s api.header_timeout_ms api.max_conns_per_peer; do
  knows "$k" || unknown+=" $k"
done
[ -z "$unknown" ] || say "repro: settings this build does not know (left out):$unknown"
say "repro: $(jq -r '.outcome' "$jsonl" 2>/dev/null | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}'); build $rev; $jsonl"
exit "$failed"
