"""Adversarial drills against `tangshi serve`, on loopback: what each bad client gets, and the server's memory.

    python benchmarks/serve_drills.py                 # start the bundled model's server and drill it
    python benchmarks/serve_drills.py --mb 200        # a 200 MB chunked body

It starts `tangshi serve` on a free port (or uses --port of a running one with --pid for its memory)
and prints one line a drill:
- a chunked body of --mb megabytes (no Content-Length): the status, and the server's resident memory
  before, at its peak during the drill, and after;
- an overlong `rhyme` (the whole body limit of 阳): the status and the size of the answer;
- 30 requests for 月 batched with 30 for 薴 (whose variant 苎 is written, with a note): how many of the
  月 answers carry someone else's note;
- a client that sends half its headers and waits: how long until the server closes the connection;
- HEAD / and HEAD /health; whether GET /v1/models mentions a file-system path;
- a 1,000-character begin and `temperature: 1e308` / `repetition_penalty: NaN`: the status and message.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from serve_load import free_port, rss_mb, wait_healthy  # noqa: E402


def post(port: int, body: dict | bytes, timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    conn.request("POST", "/v1/poems", data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.read()
    conn.close()
    return resp.status, out


def chunked(port: int, pid: int | None, mb: int) -> str:
    before, peak = rss_mb(pid) if pid else None, [0.0]
    stop = threading.Event()

    def watch():
        while not stop.is_set() and pid:
            peak[0] = max(peak[0], rss_mb(pid) or 0)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(
        b"POST /v1/poems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk, sent = b"x" * 65536, 0
    try:
        while sent < mb * 2**20:
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and hung up
    answer = b""
    try:
        while part := s.recv(65536):
            answer += part
    except OSError:
        pass
    s.close()
    time.sleep(1)
    stop.set()
    watcher.join()
    status = answer.split(b"\r\n", 1)[0].decode() or "no answer"
    memory = f"; server RSS {before:.0f} MB before, peak {peak[0]:.0f} MB, {rss_mb(pid):.0f} MB after" if pid else ""
    return f"{mb} MB chunked body, {sent / 2**20:.1f} MB sent before the answer: {status}{memory}"


def notes_leak(port: int) -> str:
    asks = [{"begin": "月" if i % 2 else "薴", "seed": i, "max_length": 20} for i in range(60)]
    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda a: (a["begin"], post(port, a)), asks))
    leaked = sum(1 for b, (_, out) in answers if b == "月" and json.loads(out)["notes"])
    noted = sum(1 for b, (_, out) in answers if b == "薴" and json.loads(out)["notes"])
    return f"30 requests for 月 batched with 30 for 薴: {leaked} 月 answers carry a note; {noted}/30 薴 answers do"


def slow_headers(port: int) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"POST /v1/poems HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    try:
        closed = s.recv(1024) == b""
    except TimeoutError:
        closed = False
    s.close()
    state = "closed by the server" if closed else "still open"
    return f"half the headers, then nothing: {state} after {time.time() - t0:.1f} s"


def head(port: int) -> str:
    out = []
    for path in ("/", "/health"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("HEAD", path)
        out.append(f"HEAD {path} {conn.getresponse().status}")
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/models")
    models = conn.getresponse().read().decode()
    conn.close()
    paths = '"path"' in models or os.getcwd() in models or "/site-packages/" in models
    return ", ".join(out) + f"; /v1/models {'shows' if paths else 'shows no'} file-system path"


def short(port: int, body: dict | bytes, what: str) -> str:
    status, out = post(port, body)
    text = out.decode("utf-8", "replace")
    detail = json.loads(text).get("detail") if text.startswith("{") else text
    if isinstance(detail, list):
        detail = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
    return f"{what}: {status} ({len(out):,} bytes) {str(detail)[:160]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, help="an already running server (default: start one)")
    ap.add_argument("--pid", type=int, help="that server's process, for its memory")
    ap.add_argument("--mb", type=int, default=50, help="megabytes of the chunked body")
    args = ap.parse_args()
    server, port, pid = None, args.port, args.pid
    if port is None:
        port = free_port()
        cmd = [sys.executable, "-m", "tangshi", "serve", "--port", str(port)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = server.pid
    try:
        wait_healthy("127.0.0.1", port, 120)
        print(chunked(port, pid, args.mb))
        print(
            short(
                port,
                json.dumps({"rhyme": "阳" * 5000, "form": "七绝"}, ensure_ascii=False).encode(),
                "rhyme of 5,000 characters",
            )
        )
        print(notes_leak(port))
        print(slow_headers(port))
        print(head(port))
        print(short(port, {"begin": "月" * 1000}, "a 1,000-character begin"))
        print(short(port, b'{"begin": "\\u6708", "temperature": 1e308}', "temperature 1e308"))
        print(short(port, b'{"begin": "\\u6708", "repetition_penalty": NaN}', "repetition_penalty NaN"))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
