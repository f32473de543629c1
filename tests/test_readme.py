"""Every command in the README's ```bash blocks runs, in order, and exits 0 (issue 38, item 2).

The first block (the two set-up lines, which CI itself runs) is left out. The commands run in a temporary
folder beside a link `../shared` to the real corpora, as from a checkout. Budgets are shrunk by fixed rules,
so that the whole README runs in a few minutes:

- `--max-minutes N` becomes `--max-steps 2N` (the README's order is kept: a resume gets the larger total);
- `--poems N` (eval) becomes `--poems 2`, `--pairs N` (panel) becomes `--pairs 2`;
- `tangshi serve` starts in the background on a free port (8000, also the default port of a serve without
  `--port`, and 9000 are replaced by free ports in every command), is waited for at `/health`, and is
  stopped at the end of its block; the `curl` lines run against it with `--fail`, so that an HTTP error
  fails the test;
- before `tangshi panel score`, each reader's file is the panel's `ratings.template.jsonl` filled in with
  3s and the human poem picked as A, as a reader would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import need_shared_data

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"


def bash_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block, continuation lines joined; comments, then empty lines dropped."""
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        body = body.replace("\\\n", " ")
        lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in body.splitlines()]  # comments out
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shrink(command: str, ports: dict[str, str]) -> str:
    command = re.sub(r"--max-minutes (\d+)", lambda m: f"--max-steps {2 * int(m.group(1))}", command)
    if command.startswith("tangshi eval"):
        command = re.sub(r"--poems \d+", "--poems 2", command)
        if "--poems" not in command:
            command += " --poems 2"
    command = re.sub(r"--pairs \d+", "--pairs 2", command)
    for old, new in ports.items():
        command = re.sub(rf"\b{old}\b", new, command)
    if command.startswith("tangshi serve") and "--port" not in command:
        command += f" --port {ports['8000']}"  # the default port, made free
    if command.startswith("curl "):
        command = "curl --fail --max-time 120 " + command[len("curl ") :]
    return command


def fill_ratings(command: str, cwd: Path) -> None:
    """`tangshi panel score PANEL R1 R2 ...`: write each reader's file from the panel's template."""
    words = shlex.split(command.split("#", 1)[0])
    panel, readers = cwd / words[3], words[4:]
    for reader in readers:
        rows = [json.loads(x) for x in (panel / "ratings.template.jsonl").read_text("utf-8").splitlines() if x]
        for row in rows:
            for side in ("A", "B"):
                row[side] = dict.fromkeys(row[side], 3)
            row["human"] = "A"
        (cwd / reader).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def wait_healthy(port: str, server: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"tangshi serve on port {port} exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"tangshi serve on port {port} did not answer /health within {limit} s")


def test_bash_blocks_are_found():
    blocks = bash_blocks(README.read_text("utf-8"))
    assert blocks[0][0].startswith("pip install") and len(blocks) >= 6
    commands = [c for block in blocks for c in block]
    assert not any("…" in c for c in commands), "a README command holds a literal …"
    made = {m for c in commands for m in re.findall(r"--out (runs/\w+)", c)}
    used = {m for c in commands for m in re.findall(r"(runs/\w+)/best", c)}
    assert used <= made, f"used but never made by a README command: {sorted(used - made)}"


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
    need_shared_data()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ports = {"8000": str(free_port()), "9000": str(free_port())}
    blocks = bash_blocks(README.read_text("utf-8"))[1:]
    timings = []
    for block in blocks:
        servers: list[subprocess.Popen] = []
        try:
            for raw in block:
                command = shrink(raw, ports)
                if command.startswith("tangshi panel score"):
                    fill_ratings(command, cwd)
                start = time.monotonic()
                if command.startswith("tangshi serve"):
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec {command}"], cwd=cwd, env=env, start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                    )  # fmt: skip
                    servers.append(server)
                    wait_healthy(re.search(r"--port (\d+)", command).group(1), server)
                else:
                    done = subprocess.run(
                        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
                    )
                    assert done.returncode == 0, (
                        f"README command failed ({done.returncode}): {raw}\nran: {command}\n{done.stderr[-3000:]}"
                    )
                timings.append((time.monotonic() - start, command))
                print(f"{timings[-1][0]:6.1f} s  {command}", flush=True)
        finally:
            for server in servers:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    print(f"{sum(t for t, _ in timings):.1f} s for {len(timings)} commands")
