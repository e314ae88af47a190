"""Finding and killing a private server's processes by what only they carry in their command
line (its workdir, its shared-memory prefix): other people's servers run on this machine too."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from ssd300_serving.embedded_server import EmbeddedServer


def shm_prefix(server: EmbeddedServer) -> str:
    """Prefix of the Python backend's /dev/shm regions (EmbeddedServer.command names them)."""
    return f"ssd300_{os.getpid()}_{server.http_port}_"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (a server's private workdir or shm prefix)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def stub_pid(server: EmbeddedServer, model: str) -> int:
    """The Python-backend stub serving ``model`` for this server only: its command line names the
    server's private workdir."""
    script = f"{server._workdir}/model_repository/{model}/1/model.py".encode()
    for pid in processes_mentioning(str(server._workdir)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"triton_python_backend_stub") and script in argv[1:2]:
            return pid
    raise AssertionError(f"no stub for {model} under {server._workdir}")


def kill_hard(server: EmbeddedServer) -> float:
    """SIGKILL tritonserver and its stubs (they share its process group) as a crashed container
    would die, then remove what only a clean exit removes: shared-memory files and the workdir.
    Returns the monotonic time at which tritonserver was known dead."""
    if server.process is None or server._workdir is None:  # never started, or already cleaned up
        return time.monotonic()
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    dead_since = time.monotonic()
    workdir = str(server._workdir)
    deadline = time.monotonic() + 10
    while processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for leftover in Path("/dev/shm").glob(f"{shm_prefix(server)}*"):
        leftover.unlink(missing_ok=True)
    server.stop()  # the process is gone: this only removes the workdir
    return dead_since


def process_tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (tritonserver and its stubs), bytes."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total
