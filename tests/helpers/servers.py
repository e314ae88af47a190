"""Private servers for the suites that overload, lock, kill or stop them: embedded servers on
free ports, the `make serve` launcher as a child process, and the production admin-key flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ssd300_serving.embedded_server import EXIT_TIMEOUT_S, EmbeddedServer, free_port

from .processes import kill_hard

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
# Several servers starting at once on two shared cores.
START_TIMEOUT_S = 240


def embedded(repository: Path, log_path: Path, *extra_args: str) -> EmbeddedServer:
    """An embedded server on free ports (not started)."""
    return EmbeddedServer.on_free_ports(
        repository,
        log_path=log_path,
        extra_args=extra_args,
    )


class Launcher:
    """``python -m ssd300_serving.embedded_server`` (what ``make serve`` runs) as a child process."""

    def __init__(self, repository: Path, log_path: Path) -> None:
        self.repository, self.log_path = repository, log_path
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:  # a file, not a pipe: nobody has to keep reading it
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ssd300_serving.embedded_server",
                    "--repository",
                    str(self.repository),
                    "--http-port",
                    str(self.http_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def shm_prefix(self) -> str:
        # The launcher's EmbeddedServer names its Python-backend regions after its own pid.
        assert self.process is not None
        return f"ssd300_{self.process.pid}_{self.http_port}_"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout_s: float) -> None:
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while "ssd300 ready" not in self.log():
            assert self.process.poll() is None, (
                f"the launcher exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"the launcher was not ready after {timeout_s} s:\n{self.log()[-3000:]}"
            )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2 * EXIT_TIMEOUT_S + 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_side_by_side(servers: Sequence[EmbeddedServer], launchers: Sequence[Launcher] = ()) -> None:
    """Start every server at once (each takes 15–40 s here) and wait until all are ready. A
    failure stops the ones that did start before it is raised."""
    for launcher in launchers:
        launcher.start()
    failures: list[BaseException] = []

    def start(server: EmbeddedServer) -> None:
        try:
            server.start(timeout_s=START_TIMEOUT_S)
        except BaseException as error:  # raised below, from the test's thread
            failures.append(error)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not failures, failures
        for launcher in launchers:
            launcher.wait_until_ready(START_TIMEOUT_S)
    except BaseException:
        stop_all(servers, launchers)
        raise


def stop_all(servers: Sequence[EmbeddedServer], launchers: Sequence[Launcher] = ()) -> None:
    """Launchers get SIGTERM (the way they are meant to stop); embedded servers are disposable
    and get SIGKILL, which is faster and also cleans up after a test that broke them."""
    for launcher in launchers:
        launcher.stop()
    for server in servers:
        kill_hard(server)


def restriction_flags(key: str, folder: Path) -> list[str]:
    """The flags deploy/entrypoint.sh appends for ``key``, read by running it with a stand-in
    tritonserver that prints its arguments: the production flags, not a copy of them."""
    record, stand_in = folder / "arguments.txt", folder / "bin" / "tritonserver"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    stand_in.chmod(0o755)
    environment = {"PATH": f"{stand_in.parent}:{os.environ['PATH']}", "TRITON_ADMIN_KEY": key}
    subprocess.run(["sh", str(ENTRYPOINT)], env=environment, check=True, capture_output=True, timeout=30)
    flags = record.read_text().split()
    assert [flag.split("=", 1)[0] for flag in flags] == [
        "--http-restricted-api",
        "--grpc-restricted-protocol",
    ]
    return flags


class PrivateServers:
    """One test module's own servers, started side by side by ``start()`` and stopped when the
    module ends (the ``private_servers`` fixture): a suite that overloads, locks, kills or stops a
    server never shares it with another suite, so the suites may run in any order."""

    def __init__(self, repository: Path, folder: Path) -> None:
        self.repository, self.folder = repository, folder
        self._pending: tuple[list[EmbeddedServer], list[Launcher]] = ([], [])
        self._started: tuple[list[EmbeddedServer], list[Launcher]] = ([], [])

    def embedded(self, name: str, *extra_args: str) -> EmbeddedServer:
        server = embedded(self.repository, self.folder / f"{name}.log", *extra_args)
        self._pending[0].append(server)
        return server

    def launcher(self, name: str) -> Launcher:
        launcher = Launcher(self.repository, self.folder / f"{name}.log")
        self._pending[1].append(launcher)
        return launcher

    def start(self) -> None:
        servers, launchers = self._pending
        self._pending = ([], [])
        self._started[0].extend(servers)
        self._started[1].extend(launchers)
        start_side_by_side(servers, launchers)

    def stop(self) -> None:
        stop_all(*self._started)
