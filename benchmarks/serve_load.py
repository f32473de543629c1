"""Load on `tangshi serve`: N concurrent clients on loopback for a fixed time.

    python benchmarks/serve_load.py --clients 20 --seconds 60
    python benchmarks/serve_load.py --clients 64 --seconds 60 --form 七绝
    python benchmarks/serve_load.py --clients 20 --seconds 30 --batch-max 1   # no batching: a queue
    python benchmarks/serve_load.py --clients 64 --seconds 60 --mix           # mixed requests
    python benchmarks/serve_load.py --abandon 30                              # hung-up heavy requests
    python benchmarks/serve_load.py --behind 30                               # a short request behind heavy ones

It starts the server (the bundled model unless --checkpoint) on a free port in a child process, or
uses --url. Each client sends one request at a time until the time is up or --max-requests have been
sent in all; then the server is stopped. By default every request asks for one poem in --form
(begin characters 日 红 山 夜 湖 海 月 in turn, relaxed tones). With --mix each client goes through
MIX in turn, starting at its own place: free, the four forms, an acrostic, rerank 4, beam 4, two
poems, a seeded poem and GET /health. It reports requests/s, poems/s, latency p50/p95/p99/max, the
status codes, every error and the server's resident memory before and after the load (started
server only); the last line is machine-readable. Bounded: it always ends within --seconds plus one
request's timeout.

--abandon N sends N heavy requests (a 七律, 4 poems, rerank 16 each) whose clients hang up at once,
then one normal request (a 七绝), and reports that request's latency: a server that writes abandoned
requests makes it wait for all of them. --behind N does the same with clients that wait for their
answers: a server that writes in arrival order makes the short request wait for all N.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlparse

from tangshi.options import NAMES, WriteOptions
from tangshi.serve import batching

BEGINS = "日红山夜湖海月"
MIX = [
    {},
    {"form": "五绝"},
    {"form": "七绝"},
    {"form": "五律"},
    {"form": "七律"},
    {"acrostic": "春夏秋冬", "form": "五绝", "begin": ""},
    {"form": "七绝", "rerank": 4},
    {"form": "五绝", "beam": 4},
    {"num": 2},
    {"form": "七绝", "seed": 7},
    None,  # GET /health
]
HEAVY = {"begin": "月", "form": "七律", "num": 4, "rerank": 16}


KINDS = {
    "light": "poem requests of at most 8 rows: the default beam, or 8 sampled candidates",
    "heavy": "poem requests of more rows",
    "health": "GET /health",
}


def kind_of(ask: dict | None) -> str:
    """The server's own split (`serve.batching.light`, on the request's options as the server decides them)."""
    if ask is None:
        return "health"
    options = WriteOptions(**{k: v for k, v in ask.items() if k in NAMES}).validate()
    return "light" if batching.light(options) else "heavy"


def pcts(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100) if len(values) >= 2 else [values[0]] * 99
    return {"p50": 1000 * q[49], "p95": 1000 * q[94], "max": 1000 * max(values)}


def spread(values: list[float]) -> str:
    return "  ".join(f"{k} {v:,.0f} ms" for k, v in pcts(values).items())


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return kb / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(host: str, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {host}:{port} did not become healthy in {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests in all")
    ap.add_argument("--form", default="七绝", choices=["free", "五绝", "七绝", "五律", "七律"])
    ap.add_argument("--url", help="an already running server (default: start one)")
    ap.add_argument("--checkpoint", help="checkpoint folder for the started server (default: bundled)")
    ap.add_argument("--batch-max", type=int, default=64, help="the started server's --batch-max (1: no batching)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before a request counts as failed")
    ap.add_argument("--mix", action="store_true", help="mixed requests (MIX) instead of one form")
    ap.add_argument("--abandon", type=int, default=0, help="N hung-up heavy requests, then time one request")
    ap.add_argument("--behind", type=int, default=0, help="N waiting heavy requests, then time one short request")
    args = ap.parse_args()

    server = None
    if args.url:
        u = urlparse(args.url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
    else:
        host, port = "127.0.0.1", free_port()
        cmd = [sys.executable, "-m", "tangshi", "serve", "--port", str(port), "--batch-max", str(args.batch_max)]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        wait_healthy(host, port, 120)
        pid = server.pid if server is not None else None
        if args.abandon or args.behind:
            return run_abandon(args, host, port, pid)
        return run_load(args, host, port, pid)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def run_abandon(args: argparse.Namespace, host: str, port: int, pid: int | None) -> int:
    body = json.dumps(HEAVY, ensure_ascii=False).encode()
    waiting = []
    for _ in range(args.abandon or args.behind):
        conn = http.client.HTTPConnection(host, port, timeout=args.timeout * 4)
        conn.request("POST", "/v1/poems", body, {"Content-Type": "application/json"})
        if args.behind:
            waiting.append(conn)  # read after the short request
        else:
            conn.close()  # hang up without reading the answer
    time.sleep(0.5)
    conn = http.client.HTTPConnection(host, port, timeout=args.timeout * 4)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/poems", json.dumps({"begin": "月", "form": "七绝"}, ensure_ascii=False).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
    resp = conn.getresponse()
    resp.read()
    ms = 1000 * (time.perf_counter() - t0)
    statuses = Counter()
    for c in waiting:
        statuses[c.getresponse().status] += 1
        c.close()
    if args.behind:
        print(f"{args.behind} waiting heavy requests {HEAVY}, then one 七绝: status {resp.status}, {ms:.0f} ms")
        print(f"  the heavy ones: {dict(statuses)}")
        print(f"serve_load: behind={args.behind} next_request_ms={ms:.0f} status={resp.status}")
    else:
        print(f"{args.abandon} abandoned heavy requests {HEAVY}, then one 七绝: status {resp.status}, {ms:.0f} ms")
        print(f"serve_load: abandoned={args.abandon} next_request_ms={ms:.0f} status={resp.status}")
    return 0 if resp.status == 200 else 1


def run_load(args: argparse.Namespace, host: str, port: int, pid: int | None) -> int:
    rss_before = rss_mb(pid) if pid else None
    lock = threading.Lock()
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {"light": [], "heavy": [], "health": []}
    statuses: Counter = Counter()
    errors: list[str] = []
    sent = [0]
    poems = [0]
    start = time.perf_counter()
    stop_at = start + args.seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
        i = k
        while time.perf_counter() < stop_at:
            with lock:
                if sent[0] >= args.max_requests:
                    return
                sent[0] += 1
            ask = {"begin": BEGINS[i % len(BEGINS)], "form": args.form}
            if args.mix:
                kind = MIX[i % len(MIX)]
                ask = None if kind is None else {"begin": BEGINS[i % len(BEGINS)], **kind}
            i += 1
            t0 = time.perf_counter()
            try:
                if ask is None:
                    conn.request("GET", "/health")
                else:
                    body = json.dumps(ask, ensure_ascii=False)
                    conn.request("POST", "/v1/poems", body.encode(), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                status, data = 0, repr(e).encode()
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
            dt = time.perf_counter() - t0
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(dt)
                    by_kind[kind_of(ask)].append(dt)
                    poems[0] += len(json.loads(data).get("poems", []))
                elif len(errors) < 10:
                    errors.append(f"{status}: {data[:200].decode('utf-8', 'replace')}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.seconds + args.timeout + 5)
    elapsed = time.perf_counter() - start
    n_err = sum(v for k, v in statuses.items() if k != 200)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    ms = {name: 1000 * q[i - 1] for name, i in (("p50", 50), ("p95", 95), ("p99", 99))}
    rate = poems[0] / elapsed
    requests = sum(statuses.values())
    rss_after = rss_mb(pid) if pid else None
    what = "mixed requests" if args.mix else f"form {args.form}"
    print(f"{args.clients} clients, {elapsed:.1f} s, {what}, batch-max {args.batch_max}")
    print(f"requests {requests}, status codes {dict(statuses)}, errors {n_err}")
    print(f"requests/s {requests / elapsed:.2f}, poems/s {rate:.1f}")
    if rss_before is not None and rss_after is not None:
        print(f"server resident memory: {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    print(
        f"latency ms: p50 {ms['p50']:.0f}  p95 {ms['p95']:.0f}  p99 {ms['p99']:.0f}  "
        f"max {1000 * max(latencies, default=float('nan')):.0f}"
    )
    for name, values in by_kind.items():
        if values:
            print(f"  {name} ({KINDS[name]}): {len(values)} answered, {spread(values)}")
    for e in errors:
        print(f"error: {e}")
    print(
        f"serve_load: clients={args.clients} requests_per_s={requests / elapsed:.2f} poems_per_s={rate:.2f} "
        f"p50_ms={ms['p50']:.0f} "
        f"p95_ms={ms['p95']:.0f} p99_ms={ms['p99']:.0f} errors={n_err}"
        + "".join(f" {name}_{k}_ms={v:.0f}" for name, vs in by_kind.items() if vs for k, v in pcts(vs).items())
    )
    return 0 if n_err == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
