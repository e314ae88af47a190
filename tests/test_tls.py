"""TLS end to end with a self-signed CA: the embedded tritonserver serving gRPC over mutual
TLS (``--grpc-use-ssl``), and HTTPS through a small TLS-terminating proxy in front of its HTTP
port (tritonserver has no HTTPS of its own)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ssd300_client import TLS, AsyncDetector, Detector, ServerUnavailableError
from ssd300_client.cli import main
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.certificates import make_certificates

pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(built_repository, certificates, tmp_path_factory):
    """A second embedded server whose gRPC endpoint requires TLS and a client certificate
    signed by the test CA."""
    server = EmbeddedServer.on_free_ports(
        built_repository,
        log_path=tmp_path_factory.mktemp("tls-server") / "tritonserver.log",
        extra_args=(
            "--grpc-use-ssl=true",
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={certificates.server_cert}",
            f"--grpc-server-key={certificates.server_key}",
            f"--grpc-root-cert={certificates.ca_cert}",
        ),
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def https_proxy(tls_server, certificates):
    """``127.0.0.1:<port>`` terminating TLS and forwarding to the server's plain HTTP port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    proxy = _TlsProxy(context, tls_server.http_port)
    yield f"127.0.0.1:{proxy.start()}"
    proxy.stop()


class _TlsProxy:
    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self.context, self.target_port = context, target_port
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._handshake_failures_are_expected)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self.context), self.loop
        ).result(timeout=10)
        return self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shut_down() -> None:
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shut_down(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @staticmethod
    def _handshake_failures_are_expected(loop, context) -> None:
        # A client that does not trust the CA aborts the handshake: that is a test's point.
        if not isinstance(context.get("exception"), ssl.SSLError):
            loop.default_exception_handler(context)

    async def _connection(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
        )

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def _mutual(certificates) -> TLS:
    return TLS(
        ca_cert=str(certificates.ca_cert),
        client_cert=str(certificates.client_cert),
        client_key=str(certificates.client_key),
    )


def test_grpcs_with_the_ca_and_a_client_certificate_detects(tls_server, certificates, sample_paths):
    with Detector(f"grpcs://{tls_server.grpc_url}", tls=_mutual(certificates), retries=0) as detector:
        assert detector.tls[0] is not None
        detections = detector.detect(sample_paths[0])
    assert detections.image_size[0] > 0 and len(detections) > 0


# The client's own verification failing, as gRPC's error carries it to the client.
UNTRUSTED_SERVER = r"(?i)handshake failed.*CERTIFICATE_VERIFY_FAILED"


class HandshakeLog:
    """The TLS server's handshake failures. gRPC tells a client the server refused it only as
    "Socket closed"; the reason is what tritonserver's gRPC core logs (OpenSSL's own words):
    ``Handshake failed with fatal error SSL_ERROR_SSL: error:...:SSL routines::<reason>``."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.path = server.log_path
        self.start = self.path.stat().st_size

    def failure(self, reason: str, timeout_s: float = 30) -> str:
        """The first handshake failure logged since this object was made; asserts its reason."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.path.open("rb") as log:
                log.seek(self.start)
                new = log.read().decode(errors="replace")
            failures = re.findall(r"Handshake failed with fatal error (.*)", new)
            if failures:
                assert reason in failures[0], failures
                return failures[0]
            assert time.monotonic() < deadline, f"no handshake failure logged; the log gained:\n{new}"
            time.sleep(0.1)


def _refused(server: EmbeddedServer, url: str, tls: TLS | None, photo: Path, reason: str) -> None:
    """One detection over ``tls`` fails as unavailable, and the server logs ``reason`` for it."""
    log = HandshakeLog(server)
    with Detector(url, tls=tls, retries=0, timeout_s=10) as detector:
        with pytest.raises(ServerUnavailableError, match="Socket closed"):
            detector.detect(photo)
    log.failure(reason)


def test_plaintext_grpc_to_the_tls_port_is_refused_by_the_handshake(tls_server, sample_paths):
    _refused(tls_server, tls_server.grpc_url, None, sample_paths[0], "wrong version number")


def test_a_server_certificate_from_another_ca_is_not_trusted(tls_server, certificates, sample_paths):
    tls = TLS(
        ca_cert=str(certificates.other_ca_cert),
        client_cert=str(certificates.client_cert),
        client_key=str(certificates.client_key),
    )
    with Detector(tls_server.grpc_url, tls=tls, retries=0, timeout_s=10) as detector:
        with pytest.raises(ServerUnavailableError, match=UNTRUSTED_SERVER):
            detector.detect(sample_paths[0])


def test_mutual_tls_refuses_a_client_certificate_signed_by_another_ca(tls_server, certificates, sample_paths):
    """The client trusts the server, but its own certificate was signed by a CA that the
    server's --grpc-root-cert is not: the server refuses it (what mutual TLS is for)."""
    tls = TLS(
        ca_cert=str(certificates.ca_cert),
        client_cert=str(certificates.foreign_client_cert),
        client_key=str(certificates.foreign_client_key),
    )
    _refused(tls_server, tls_server.grpc_url, tls, sample_paths[0], "certificate verify failed")


def test_without_a_client_certificate_mutual_tls_refuses(tls_server, certificates, sample_paths):
    tls = TLS(ca_cert=str(certificates.ca_cert))
    _refused(tls_server, tls_server.grpc_url, tls, sample_paths[0], "peer did not return a certificate")


def test_the_cli_takes_grpcs_urls_and_certificate_files(tls_server, certificates, sample_paths, capsys):
    common = [str(sample_paths[0]), "--url", f"grpcs://{tls_server.grpc_url}", "--retries", "0", "--print"]
    files = ["--ca-cert", str(certificates.ca_cert), "--client-cert", str(certificates.client_cert)]
    assert main([*common, *files, "--client-key", str(certificates.client_key)]) == 0
    assert capsys.readouterr().out.startswith(f"{sample_paths[0]}: ")
    log = HandshakeLog(tls_server)
    assert main([*common, "--ca-cert", str(certificates.ca_cert)]) == 2  # no client certificate
    assert capsys.readouterr().err.startswith("error: ")
    log.failure("peer did not return a certificate")


def test_the_async_client_speaks_grpcs(tls_server, certificates, sample_paths):
    async def detect():
        async with AsyncDetector(f"grpcs://{tls_server.grpc_url}", tls=_mutual(certificates)) as detector:
            return await detector.detect(sample_paths[0])

    assert len(asyncio.run(detect())) > 0


def test_https_through_a_tls_terminating_proxy(https_proxy, certificates, sample_paths, capsys):
    tls = TLS(ca_cert=str(certificates.ca_cert))
    with Detector(f"https://{https_proxy}", protocol="http", tls=tls, retries=0) as detector:
        assert len(detector.detect(sample_paths[0])) > 0
    code = main(
        [
            str(sample_paths[0]),
            "--url",
            f"https://{https_proxy}",
            "--ca-cert",
            str(certificates.ca_cert),
            "--print",
        ]
    )
    assert code == 0, capsys.readouterr().err


def test_the_async_client_speaks_https(https_proxy, certificates, sample_paths):
    async def detect():
        tls = TLS(ca_cert=str(certificates.ca_cert))
        async with AsyncDetector(f"https://{https_proxy}", protocol="http", tls=tls) as detector:
            return await detector.detect(sample_paths[0])

    assert len(asyncio.run(detect())) > 0


def test_https_without_trusting_the_ca_fails_naming_the_certificate(https_proxy, sample_paths):
    with Detector(f"https://{https_proxy}", protocol="http", retries=0, timeout_s=10) as detector:
        with pytest.raises(ServerUnavailableError, match=r"CERTIFICATE_VERIFY_FAILED"):
            detector.detect(sample_paths[0])


def test_tls_settings_are_checked_when_made(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        TLS(client_cert=str(tmp_path / "c.pem"))
    with pytest.raises(ValueError, match="no such file"):
        TLS(ca_cert=str(tmp_path / "absent.pem"))
    with pytest.raises(ValueError, match="is a grpc address"):
        Detector("grpcs://127.0.0.1:1", protocol="http")


# Locust's users: load_tests.triton_user monkey-patches the standard library (gevent) on import,
# so its client runs in a child process, as Locust runs it.
_LOCUST_REQUEST = """
import json, os, sys
from types import SimpleNamespace

from load_tests.triton_user import DETECTOR, TimedTritonClient, tls_of  # first: gevent before gRPC

import numpy as np
from locust.event import Events

from load_tests.endpoints import parse_endpoint

url, ca_cert, client_cert, client_key = sys.argv[1:]
events, fired = Events(), []
events.request.add_listener(lambda **event: fired.append(event))
options = SimpleNamespace(ca_cert=ca_cert, client_cert=client_cert, client_key=client_key)
client = TimedTritonClient(
    parse_endpoint(url), SimpleNamespace(events=events), timeout_s=20, tls=tls_of(options)
)
pixels = np.zeros((2, 300, 300, 3), np.uint8)
client.infer(DETECTOR, pixels)
client.close()
print(json.dumps([
    {"type": e["request_type"], "name": e["name"], "length": e["response_length"],
     "exception": None if e["exception"] is None else str(e["exception"])}
    for e in fired
]), flush=True)
os._exit(0)  # a failed TLS channel can keep gRPC's gevent threads from letting the process end
"""


def _locust_request(url: str, ca_cert: str = "", client_cert: str = "", client_key: str = "") -> dict:
    """The one Locust request event of one inference by the load test's TimedTritonClient."""
    done = subprocess.run(
        [sys.executable, "-c", _LOCUST_REQUEST, url, ca_cert, client_cert, client_key],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (event,) = json.loads(done.stdout.splitlines()[-1])
    return event


def test_the_locust_user_client_speaks_mutual_grpc_tls(tls_server, certificates):
    files = [str(certificates.ca_cert), str(certificates.client_cert), str(certificates.client_key)]
    event = _locust_request(f"grpcs://{tls_server.grpc_url}", *files)
    assert event["exception"] is None, event
    assert event["type"] == "grpc" and event["name"] == "ssd300_detector" and event["length"] > 0


def test_the_locust_user_client_without_the_ca_reports_a_failure(tls_server, certificates):
    event = _locust_request(
        f"grpcs://{tls_server.grpc_url}", "", str(certificates.client_cert), str(certificates.client_key)
    )
    assert event["exception"] is not None and event["length"] == 0
    assert re.search(UNTRUSTED_SERVER, event["exception"]), event
