"""The embedded server's start: what it refuses before launching tritonserver, and Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssd300_serving.embedded_server import GENERATED_FILES, EmbeddedServer, ServerError, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("missing", GENERATED_FILES)
def test_a_repository_without_the_builds_output_names_make_model(tmp_path, missing):
    repository = tmp_path / "model_repository"
    shutil.copytree(REPO_ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("model.pt"))
    for generated in GENERATED_FILES:
        if generated != missing:
            (repository / generated).write_text("# stands in for the build's output\n")
    server = EmbeddedServer.on_free_ports(repository)
    with pytest.raises(ServerError, match=rf"{missing} is missing: build it with `make model`"):
        server.start()
    assert server.process is None  # refused before anything was launched


# --- Ctrl-C while the server starts --------------------------------------------------------------

CANCEL_LIMIT_S = 15  # the launcher used to ignore Ctrl-C until the models were ready (up to 180 s)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _process_group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def _wait_for(predicate, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


@pytest.mark.server
def test_ctrl_c_while_starting_stops_the_launcher_and_tritonserver_promptly(built_repository, tmp_path):
    """``python -m ssd300_serving.embedded_server`` (``make serve``) gets SIGINT while tritonserver
    loads the models: it exits within seconds, and no tritonserver or stub process stays."""
    ports = [str(free_port()) for _ in range(3)]
    output = tmp_path / "launcher.log"
    command = [sys.executable, "-m", "ssd300_serving.embedded_server", "--repository", str(built_repository)]
    for name, port in zip(("--http-port", "--grpc-port", "--metrics-port"), ports):
        command += [name, port]
    with open(output, "wb") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = None
    try:
        servers = _wait_for(lambda: _children(launcher.pid), timeout_s=60)
        assert servers, f"no tritonserver was started:\n{output.read_text()}"
        (server,) = servers
        # Polled, not slept: tritonserver has begun loading models (readiness takes tens of
        # seconds on CPU), so the signal arrives mid-start whatever the machine's load.
        loading = _wait_for(lambda: '"loading: ' in output.read_text(errors="replace"), timeout_s=120)
        assert loading, f"tritonserver never began loading models:\n{output.read_text()}"
        assert launcher.poll() is None, output.read_text()
        interrupted = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(timeout=CANCEL_LIMIT_S)
        took = time.monotonic() - interrupted
    finally:
        if launcher.poll() is None:  # the test failed: take down what the launcher started
            if server is not None:
                try:
                    os.killpg(server, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            launcher.kill()
            launcher.wait()
    text = output.read_text()
    assert "ssd300 ready" not in text, "the server finished starting before the signal: test invalid"
    assert code == 128 + signal.SIGINT, text
    assert "SIGINT while starting: tritonserver stopped" in text
    assert took < CANCEL_LIMIT_S
    assert not Path(f"/proc/{server}").exists(), "tritonserver is still running"
    # Its Python stubs notice the parent's exit and leave on their own within moments.
    leftovers = _wait_for(lambda: not _process_group(server), timeout_s=10)
    assert leftovers, f"processes left in tritonserver's group: {_process_group(server)}"


def test_sigterm_to_a_benchmark_script_runs_its_cleanup_so_servers_stop(tmp_path):
    """make bench/perf hold their servers in with-blocks: after stop_servers_on_sigterm(), SIGTERM
    unwinds them (Python's default would end the process and leave tritonserver running)."""
    marker = tmp_path / "stopped"
    script = (
        "import sys, time\n"
        "from ssd300_serving.embedded_server import stop_servers_on_sigterm\n"
        "stop_servers_on_sigterm()\n"
        "try:\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('server stopped')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "holding"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 128 + signal.SIGTERM
    assert marker.read_text() == "server stopped"
