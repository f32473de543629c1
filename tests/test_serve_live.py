"""The server as it runs under uvicorn, on a loopback port: waiting requests batched by their options,
a bounded queue, abandoned requests dropped, chunked bodies held to the limit, slow clients timed out."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn

from tangshi import Poet
from tangshi.config import ServeConfig
from tangshi.serve import create_app
from tangshi.serve.transport import header_timeout_protocol

pytestmark = pytest.mark.slow  # uvicorn on a loopback port, with the bundled model

BLOCKER = {"begin": "月", "form": "七律", "num": 4, "rerank": 16, "seed": 1}  # keeps the writer busy a while


class Live:
    def __init__(self, settings: ServeConfig):
        self.app = create_app(settings=settings)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning",
            http=header_timeout_protocol(settings.client_timeout), timeout_keep_alive=1,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    @property
    def worker(self):
        return self.app.state.served.worker

    def post(self, body: dict, timeout: float = 120) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("POST", "/v1/poems", json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
        conn.close()
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def live():
    server = Live(ServeConfig(max_queue=16, client_timeout=1.0))
    yield server
    server.stop()


def busy(live: Live) -> threading.Thread:
    """Keep the writer busy with BLOCKER, and wait until it has started on it."""
    t = threading.Thread(target=live.post, args=(BLOCKER,), daemon=True)
    t.start()
    deadline = time.time() + 30
    while live.worker.writing != BLOCKER["num"] and time.time() < deadline:
        time.sleep(0.005)
    assert live.worker.writing == BLOCKER["num"], "the writer did not take the blocker"
    return t


def test_waiting_requests_with_the_same_options_are_written_as_one_batch(live):
    asks = [{"begin": b, "form": f, "seed": s} for s, b in enumerate("日红山夜湖海") for f in ("五绝", "七绝")]
    asks += [{"begin": "月", "num": 2, "seed": 99}]  # free, two poems
    blocker = busy(live)
    before = live.worker.batches
    with ThreadPoolExecutor(len(asks)) as pool:
        results = list(pool.map(live.post, asks))
    blocker.join()
    assert [status for status, _, _ in results] == [200] * len(asks)
    # the blocker, then one batch a distinct set of options (五绝, 七绝, free), all waiting together
    assert live.worker.batches - before <= 4
    poet = Poet.load()
    for ask, (_, body, _) in zip(asks, results, strict=True):
        options = {k: v for k, v in ask.items() if k != "begin"}
        alone = poet.write(ask["begin"], **options)
        assert [p["text"] for p in body["poems"]] == [p.text for p in alone], ask  # seeded: as alone


def test_a_full_queue_answers_503_with_retry_after(live):
    blocker = busy(live)
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(live.post, [{"begin": "山", "form": "五绝", "seed": i} for i in range(24)]))
    blocker.join()
    statuses = [s for s, _, _ in results]
    assert statuses.count(503) >= 24 - 16 and statuses.count(200) >= 1 and set(statuses) == {200, 503}
    status, body, headers = next(r for r in results if r[0] == 503)
    assert headers["retry-after"] == "1" and "--max-queue" in body["detail"]


def test_requests_whose_clients_hung_up_are_dropped_before_they_are_written(live):
    blocker = busy(live)
    dropped, batches = live.worker.dropped, live.worker.batches
    payload = json.dumps({"begin": "湖", "form": "七律", "num": 4, "rerank": 16}).encode()
    for _ in range(5):
        s = live.raw()
        head = f"POST /v1/poems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
        s.sendall(head.encode() + b"\r\n\r\n" + payload)
        time.sleep(0.05)
        s.close()  # hang up at once
    time.sleep(0.3)
    status, body, _ = live.post({"begin": "月", "form": "五绝", "seed": 3})
    blocker.join()
    assert status == 200 and live.worker.dropped - dropped == 5
    deadline = time.time() + 5
    while live.worker.batches - batches < 2 and time.time() < deadline:
        time.sleep(0.01)  # the writer counts a batch just after answering it
    assert live.worker.batches - batches == 2  # the blocker and the last request: none of the abandoned


def test_a_batch_whose_clients_all_hung_up_is_stopped_while_it_is_written(live):
    dropped = live.worker.dropped
    payload = json.dumps(BLOCKER).encode()
    s = live.raw()
    head = f"POST /v1/poems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
    s.sendall(head.encode() + b"\r\n\r\n" + payload)
    deadline = time.time() + 30
    while live.worker.writing != BLOCKER["num"] and time.time() < deadline:
        time.sleep(0.005)
    s.close()  # hang up while it is written
    while live.worker.writing and time.time() < deadline:
        time.sleep(0.005)
    assert live.worker.dropped - dropped == 1
    assert live.post({"begin": "月", "form": "五绝", "seed": 3})[0] == 200


def test_a_chunked_body_over_the_limit_gets_413_without_being_read(live):
    s = live.raw()
    s.sendall(
        b"POST /v1/poems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 4096
    try:
        for _ in range(256):  # 1 MB, far over the 16 KB limit
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    except OSError:
        pass  # the server answered and closed: the rest is never read
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    answer = answer.decode("utf-8", "replace")
    s.close()
    assert answer.startswith("HTTP/1.1 413") and "16384 bytes" in answer
    assert live.post({"begin": "月", "seed": 1, "max_length": 12})[0] == 200  # still serving


def test_slow_clients_are_timed_out(live):
    s = live.raw()
    s.sendall(b"POST /v1/poems HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    s.settimeout(5)
    t0 = time.time()
    assert s.recv(1024) == b"" and time.time() - t0 < 4  # closed after client_timeout (1 s)
    s.close()
    s = live.raw()
    s.sendall(b"POST /v1/poems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    s.settimeout(5)
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    answer = answer.decode()
    s.close()
    assert answer.startswith("HTTP/1.1 408") and "not received within 1 s" in answer


def test_a_body_sent_a_byte_at_a_time_gets_408_at_the_whole_body_deadline(live):
    s = live.raw()
    s.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    t0, answer = time.time(), b""
    s.settimeout(0.3)
    while time.time() - t0 < 6 and not answer.endswith(b"}"):
        try:
            s.sendall(b" ")  # a byte every 0.3 s: each within the 1 s timeout, the whole body never
            answer += s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408") and time.time() - t0 < 3, answer


def test_head_and_health(live):
    for path in ("/", "/health", "/v1/models", "/v1/cipai"):
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("HEAD", path)
        assert conn.getresponse().status == 200, path
        conn.close()
