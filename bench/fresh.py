#!/usr/bin/python3
"""bench/fresh.py BROKER TOPIC API_PORT ADMIN_PORT TOKEN [N]: freshness of a running flamed
(issue 5, item 1), printed as JSON lines.

1. Produce to visible: N times, one event for a fresh user is produced with kcat (no linger,
   no payload ts: the event's time is the Kafka message's CreateTime), and
   GET /v1/users/<user>/history is polled on a keep-alive connection until the event shows;
   the latency is the wall clock then minus the event's ts_ms (the same host clock). The
   daemon's own produce-to-durable histogram (flamed_ingest_latency_seconds) is scraped
   before and after, so that a slow tail can be placed: in ingest, or after it.
2. Round end to serving: POST /v1/admin/train-now, then /v1/model is polled until the version
   changes; the delay is the wall clock then minus the new version's trained_at_ms (stamped
   when its round finished, before the snapshot is written and published).
"""
import http.client
import json
import re
import subprocess
import sys
import time


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def steal_s():
    """CPU time the hypervisor gave to other guests (/proc/stat's steal), all cores, seconds:
    a slow tail with steal in it is the host's, not the daemon's."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / 100.0


def scrape(conn):
    """The /metrics values this script reads: ingest-latency buckets and finished rounds."""
    st, body = get(conn, "/metrics")
    m = {}
    for line in body.decode().splitlines():
        k = re.match(r'flamed_ingest_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if k:
            m["le" + k.group(1)] = int(k.group(2))
        elif line.startswith("flamed_train_rounds_total{"):
            m["rounds"] = m.get("rounds", 0) + int(float(line.split()[-1]))
    return m


def main():
    broker, topic, port, admin, token = sys.argv[1:6]
    n = int(sys.argv[6]) if len(sys.argv) > 6 else 200
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    run = int(time.time())
    lat = []
    m0, s0 = scrape(conn), steal_s()
    for i in range(n):
        user, item = f"fresh-{run}-{i}", f"fresh-item-{i % 50}"
        ev = json.dumps({"user": user, "item": item})
        subprocess.run(["kcat", "-P", "-b", broker, "-t", topic, "-k", user, "-X", "linger.ms=0"],
                       input=(ev + "\n").encode(), check=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            st, body = get(conn, f"/v1/users/{user}/history")
            if st == 200:
                ts = json.loads(body)["events"][-1]["ts_ms"]
                lat.append(time.time() * 1000.0 - ts)
                break
        else:
            lat.append(float("inf"))
        time.sleep(0.02)
    m1, s1 = scrape(conn), steal_s()
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
    print(json.dumps({"what": "produce_to_visible_ms", "n": n, "p50": round(pct(lat, 0.5), 1),
                      "p99": round(pct(lat, 0.99), 1), "max": round(max(lat), 1),
                      "over_50": sum(x > 50 for x in lat), "over_100": sum(x > 100 for x in lat),
                      "ingest_over_50": d.get("le+Inf", 0) - d.get("le0.05", 0),
                      "ingest_over_100": d.get("le+Inf", 0) - d.get("le0.1", 0),
                      "rounds_finished": d.get("rounds", 0), "steal_s": round(s1 - s0, 2)}))
    aconn = http.client.HTTPConnection("127.0.0.1", int(admin), timeout=5)
    delays = []
    for _ in range(5):
        st, body = get(conn, "/v1/model")
        v0 = json.loads(body)["version"]
        aconn.request("POST", "/v1/admin/train-now", headers={"Authorization": "Bearer " + token})
        aconn.getresponse().read()
        deadline = time.time() + 300
        while time.time() < deadline:
            st, body = get(conn, "/v1/model")
            m = json.loads(body)
            if m["version"] != v0:
                delays.append(time.time() * 1000.0 - m["trained_at_ms"])
                break
            time.sleep(0.002)
    print(json.dumps({"what": "round_end_to_serving_ms", "n": len(delays),
                      "max": round(max(delays), 1) if delays else None,
                      "all": [round(d, 1) for d in delays]}))


if __name__ == "__main__":
    main()
