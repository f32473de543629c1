"""Load on `tangshi serve`: N concurrent clients on loopback for a fixed time.

    python benchmarks/serve_load.py --clients 20 --seconds 60
    python benchmarks/serve_load.py --clients 64 --seconds 60 --form 七绝
    python benchmarks/serve_load.py --clients 20 --seconds 30 --batch-max 1   # no batching: a queue

It starts the server (the bundled model unless --checkpoint) on a free port in a child process, or
uses --url. Each client posts one poem request at a time (begin characters 日 红 山 夜 湖 海 月 in
turn, the given form, relaxed tones) until the time is up or --max-requests have been sent in all;
then the server is stopped. It reports poems/s, latency p50/p95/p99/max, the status codes and every
error; the last line is machine-readable. Bounded: it always ends within --seconds plus one
request's timeout.
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

BEGINS = "日红山夜湖海月"


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
        return run_load(args, host, port)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def run_load(args: argparse.Namespace, host: str, port: int) -> int:
    lock = threading.Lock()
    latencies: list[float] = []
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
            body = json.dumps({"begin": BEGINS[i % len(BEGINS)], "form": args.form}, ensure_ascii=False)
            i += 1
            t0 = time.perf_counter()
            try:
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
                    poems[0] += len(json.loads(data)["poems"])
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
    print(f"{args.clients} clients, {elapsed:.1f} s, form {args.form}, batch-max {args.batch_max}")
    print(f"requests {sum(statuses.values())}, status codes {dict(statuses)}, errors {n_err}")
    print(f"poems/s {rate:.1f}")
    print(
        f"latency ms: p50 {ms['p50']:.0f}  p95 {ms['p95']:.0f}  p99 {ms['p99']:.0f}  "
        f"max {1000 * max(latencies, default=float('nan')):.0f}"
    )
    for e in errors:
        print(f"error: {e}")
    print(
        f"serve_load: clients={args.clients} poems_per_s={rate:.2f} p50_ms={ms['p50']:.0f} "
        f"p95_ms={ms['p95']:.0f} p99_ms={ms['p99']:.0f} errors={n_err}"
    )
    return 0 if n_err == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
