"""Run the tritonserver bundled in the ``nvidia-pytriton`` wheel on this machine, CPU only.

The wheel carries a real tritonserver 2.51 (NGC 24.10) with the Python backend but no
libtorch backend, so models load with ``--model-config-name cpu`` (their CPU variants).
``make serve``, the tests, the benchmark and the load test all start the server through
:class:`EmbeddedServer`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ssd300_common.contract import ENGINE_FILES, NETWORK_MODEL, PUBLIC_MODELS

from . import health
from .provenance import read_provenance, stamp_weights

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
DEFAULT_START_TIMEOUT_S = 180.0
# Python-backend shared memory per model instance: raw SSD outputs are ~3 MB per image, so
# start at 32 MB (batch 8 on CPU fits) and grow in 16 MB steps for larger batches.
PYTHON_SHM_DEFAULT_BYTES = 32 * 1024 * 1024
PYTHON_SHM_GROWTH_BYTES = 16 * 1024 * 1024
EXIT_TIMEOUT_S = 30
# What the model build writes into the repository (not committed) and every engine needs.
GENERATED_FILES = (f"{NETWORK_MODEL}/1/{ENGINE_FILES['torchscript']}",)
# Ensemble states while an unload waits for the requests already inside it.
_DRAINING_STATES = {"READY", "UNLOADING"}


class ServerError(RuntimeError):
    """The embedded server could not be started or did not become ready."""


class StartCancelled(ServerError):
    """:meth:`EmbeddedServer.cancel` was called (Ctrl-C, SIGTERM) before the server was ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pytriton_server_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def runtime_tree(workdir: Path) -> tuple[Path, Path]:
    """A tritonserver layout whose Python backend has the stub for this interpreter.

    Links, not copies: the wheel's files stay untouched and nothing large is duplicated.
    Returns (tritonserver binary, backends directory).
    """
    source = _pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    python_backend = workdir / "backends" / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for item in (source / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (python_backend / item.name).symlink_to(item)
    (python_backend / stub.name).symlink_to(stub)
    return source / "bin" / "tritonserver", workdir / "backends"


def _repository_view(repository: Path, workdir: Path, config_name: str) -> Path:
    """Link the repository's models into ``workdir``, with ssd300's config stamped with its weights."""
    view = workdir / "model_repository"
    view.mkdir()
    for model in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        (view / model.name).symlink_to(model.resolve(), target_is_directory=True)
    # What the models' configs reach beside them: the packed Python environment
    # ($$TRITON_MODEL_DIRECTORY/../python_env.tar.gz), when it has been built.
    for item in sorted(p for p in repository.iterdir() if p.is_file() and p.name.endswith(".tar.gz")):
        (view / item.name).symlink_to(item.resolve())
    network = repository / NETWORK_MODEL
    metadata = read_provenance(repository)
    if metadata:
        (view / NETWORK_MODEL).unlink()
        stamped = view / NETWORK_MODEL
        stamped.mkdir()
        for item in network.resolve().iterdir():
            if item.name != "configs":
                (stamped / item.name).symlink_to(item)
        config_path = network / "configs" / f"{config_name}.pbtxt"
        if not config_path.is_file():
            config_path = network / "config.pbtxt"
        (stamped / "configs").mkdir()
        (stamped / "configs" / f"{config_name}.pbtxt").write_text(
            stamp_weights(config_path.read_text(), metadata)
        )
    return view


class EmbeddedServer:
    """A tritonserver child process on loopback; a context manager that always stops it."""

    def __init__(
        self,
        repository: str | Path = "model_repository",
        *,
        http_port: int = DEFAULT_PORTS["http"],
        grpc_port: int = DEFAULT_PORTS["grpc"],
        metrics_port: int = DEFAULT_PORTS["metrics"],
        config_name: str = "cpu",
        log_path: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.config_name = config_name
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._cancelled = False

    @classmethod
    def on_free_ports(cls, repository: str | Path, **options) -> EmbeddedServer:
        """A server on three ports free right now (tests, benchmarks: never the defaults)."""
        return cls(
            repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), **options
        )

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self, binary: Path, backends: Path, repository: Path) -> list[str]:
        return [
            str(binary),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            f"--model-config-name={self.config_name}",
            # Every model loads at start, as in the default mode; explicit control lets stop()
            # unload the ensembles first so that their in-flight requests finish (see drain()).
            "--model-control-mode=explicit",
            "--load-model=*",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={PYTHON_SHM_GROWTH_BYTES}",
            # Unique shared-memory names, so several servers can run on one machine.
            f"--backend-config=python,shm-region-prefix-name=ssd300_{os.getpid()}_{self.http_port}_",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [
            sysconfig.get_config_var("LIBDIR") or "",
            str(_pytriton_server_dir().parent.parent / "nvidia_pytriton.libs"),
        ]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libs, env.get("LD_LIBRARY_PATH", "")]))
        # The Python stub runs `python3` models with whatever site-packages PATH leads to: ours,
        # where the project is installed (ssd300_common too). The stub ignores PYTHONPATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self, *, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> EmbeddedServer:
        for generated in GENERATED_FILES:
            if not (self.repository / generated).is_file():
                raise ServerError(f"{self.repository}/{generated} is missing: build it with `make model`")
        self._raise_if_cancelled()
        self._check_engine_file()
        self._workdir = Path(tempfile.mkdtemp(prefix="ssd300-triton-"))
        binary, backends = runtime_tree(self._workdir)
        view = _repository_view(self.repository, self._workdir, self.config_name)
        # SIM115: no context manager: the server writes to the log until stop().
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        log.info(
            "starting tritonserver on http %s, grpc %s, metrics %s",
            self.http_url,
            self.grpc_url,
            self.metrics_url,
        )
        self.process = subprocess.Popen(
            self.command(binary, backends, view),
            env=self.environment(),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # Ctrl-C reaches us; we stop the server in order
        )
        if output:
            output.close()
        try:
            self.wait_until_ready(timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_engine_file(self) -> None:
        """The engine the build chose (weights.json) must have its model file."""
        engine = (read_provenance(self.repository) or {}).get("engine", "torchscript")
        path = self.repository / NETWORK_MODEL / "1" / ENGINE_FILES.get(engine, "?")
        if not path.is_file():
            raise ServerError(
                f"{path} is missing although the build chose ENGINE={engine}: "
                f"rebuild with `make model ENGINE={engine}`"
            )

    def is_model_ready(self, model: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.http_url}/v2/models/{model}/ready", timeout=2
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def health(self, *, timeout_s: float = 30.0) -> tuple[bool, str]:
        """A canary inference through every Python model (model readiness misses dead stubs)."""
        return health.check(self.http_url, timeout_s=timeout_s)

    def cancel(self) -> None:
        """Give up starting: a running :meth:`start` stops the server and raises StartCancelled
        within one readiness poll. Only sets a flag, so a signal handler may call it."""
        self._cancelled = True

    def _raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise StartCancelled("start cancelled before the server was ready")

    def wait_until_ready(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._raise_if_cancelled()
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} "
                    f"while starting{self._log_hint()}"
                )
            if all(self.is_model_ready(model) for model in PUBLIC_MODELS):
                healthy, reason = self.health(timeout_s=max(deadline - time.monotonic(), 1.0))
                self._raise_if_cancelled()  # the canary may take seconds; a cancel wins
                if healthy:
                    return
                raise ServerError(
                    f"models loaded but the canary inference failed: {reason}{self._log_hint()}"
                )
            time.sleep(0.5)
        raise ServerError(f"models not ready after {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        if self.log_path and self.log_path.is_file():
            tail = self.log_path.read_text(errors="replace").splitlines()[-25:]
            return ":\n" + "\n".join(tail)
        return " (see the server output above)"

    def drain(self, *, timeout_s: float = EXIT_TIMEOUT_S) -> bool:
        """Stop taking requests for the public ensembles and wait for those already inside.

        On SIGTERM tritonserver 2.51 stops every model's scheduler at once, so an ensemble
        request in flight fails at its next step ("Server is stopping, scheduler for model has
        stopped accepting new inference requests") even though the exit timeout has not run
        out. Unloading the ensembles first refuses new requests for them (NOT_FOUND: clients
        fail over) while the composing models, still loaded, finish the requests in flight.
        True when drained; False when the server refused the unload (another control mode, a
        restricted repository API) or ``timeout_s`` ran out, in which case SIGTERM does the rest.
        """
        deadline = time.monotonic() + timeout_s
        for model in PUBLIC_MODELS:
            if self._post(f"/v2/repository/models/{model}/unload") is None:
                return False
        while time.monotonic() < deadline:
            try:
                states = {
                    entry["name"]: entry.get("state")
                    for entry in json.loads(self._post("/v2/repository/index"))
                }
            except (TypeError, ValueError, KeyError):  # no answer, or not the index
                return False
            if not any(states.get(model) in _DRAINING_STATES for model in PUBLIC_MODELS):
                return True
            time.sleep(0.1)
        log.warning("requests still in flight after %.0f s; stopping tritonserver anyway", timeout_s)
        return False

    def _post(self, path: str) -> bytes | None:
        """The body of a repository API answer; None when the server refused or did not answer."""
        request = urllib.request.Request(f"http://{self.http_url}{path}", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as error:
            log.debug("%s: %s", path, error)
            return None

    def stop(self, *, timeout_s: float = EXIT_TIMEOUT_S + 10) -> int | None:
        """Drain the ensembles, then SIGTERM (the server finishes other in-flight requests), then
        SIGKILL after ``timeout_s``. Returns tritonserver's exit code."""
        code = None
        if self.process and self.process.poll() is None:
            self.drain()
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not exit within %.0f s; killing it", timeout_s)
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait()
        elif self.process:
            code = self.process.returncode
        if self.process:
            _reap_group(self.process.pid)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def __enter__(self) -> EmbeddedServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _reap_group(group: int, grace_s: float = 3.0) -> None:
    """Python stubs being started when tritonserver stops can outlive it (seen when Ctrl-C lands
    during model loading): give them a moment to notice and leave, then kill what is left of the
    server's process group."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def stop_servers_on_sigterm() -> None:
    """For scripts that hold servers in ``with`` blocks (``make bench``, ``make perf``): SIGTERM
    raises SystemExit in the main thread, so the blocks stop their servers as Ctrl-C does.
    Python's default for SIGTERM ends the process on the spot and leaves tritonserver running."""

    def exit_143(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd300_serving.embedded_server",
        description="Serve the model repository with the tritonserver bundled in nvidia-pytriton (CPU).",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"default: {port}")
    parser.add_argument(
        "--config-name", default="cpu", help="model config variant (configs/<name>.pbtxt); default: cpu"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="seconds to wait for the models"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    server = EmbeddedServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        config_name=args.config_name,
    )
    stopping = 0  # the signal that asked us to stop

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = signum
        server.cancel()  # while starting; once ready, the loop below sees `stopping`

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start(timeout_s=args.timeout)
    except StartCancelled:
        print(f"{signal.Signals(stopping).name} while starting: tritonserver stopped", file=sys.stderr)
        return 128 + stopping
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nssd300 ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}\n"
        "models: ssd300_detector (uint8 [300,300,3] in), ssd300_image (encoded image bytes in).\n"
        "Ctrl-C stops.",
        flush=True,
    )
    while not stopping and server.process.poll() is None:
        time.sleep(0.2)
    crashed = not stopping
    code = server.stop()
    if crashed:
        print(f"error: tritonserver exited unexpectedly with code {code}", file=sys.stderr)
        return 1
    if code != 0:
        print(f"error: tritonserver did not stop cleanly (exit code {code})", file=sys.stderr)
        return 1
    print("tritonserver stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
