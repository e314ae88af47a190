"""Failover between servers and the typed errors a caller sees, against the session's server
and a dead port (nothing listening)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

from ssd300_client import (
    AsyncDetector,
    Detector,
    InferenceTimeoutError,
    InvalidImageError,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnavailableError,
    retry,
)
from ssd300_common import contract
from ssd300_serving.embedded_server import free_port

from .helpers.comparisons import assert_same_detections
from .helpers.triton_calls import url_for

pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")]


@pytest.fixture
def dead_url() -> str:
    return f"127.0.0.1:{free_port()}"  # a port nobody listens on: connections are refused


@pytest.fixture(scope="module")
def photo(sample_paths):
    return sample_paths[-1]


@pytest.fixture(scope="module")
def reference(triton_server, photo):
    with Detector(triton_server.grpc_url, shared_memory=False) as detector:
        return detector.detect(photo)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_dead_first_server_fails_over_to_the_next(triton_server, dead_url, photo, reference, protocol):
    with Detector([dead_url, url_for(triton_server, protocol)], protocol=protocol) as detector:
        assert_same_detections(detector.detect(photo), reference)


def test_after_failover_the_server_that_answered_is_asked_first(triton_server, dead_url, photo, caplog):
    with (
        Detector(f"{dead_url},{triton_server.grpc_url}") as detector,
        caplog.at_level(logging.INFO, "ssd300_client"),
    ):
        detector.detect(photo)
        detector.detect(photo)
    assert sum(dead_url in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_unreachable_server_is_unavailable_not_a_timeout(dead_url, photo, protocol):
    with Detector(dead_url, protocol=protocol, retries=0) as detector:
        with pytest.raises(ServerUnavailableError, match=dead_url) as caught:
            detector.detect(photo)
    assert not isinstance(caught.value, TimeoutError)
    assert caught.value.__cause__ is not None  # raised from the transport's error


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The pauses between rounds of attempts, recorded instead of waited (both clients)."""
    recorded: list[float] = []

    async def pause_async(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(retry, "pause", recorded.append)
    monkeypatch.setattr(retry, "pause_async", pause_async)
    return recorded


def check_ready(client: str, url: str, **options) -> None:
    """``check_ready()`` on a new Detector or AsyncDetector."""
    if client == "blocking":
        with Detector(url, **options) as detector:
            detector.check_ready()
        return

    async def check() -> None:
        async with AsyncDetector(url, **options) as detector:
            await detector.check_ready()

    asyncio.run(check())


@pytest.mark.parametrize("client", ["blocking", "asyncio"])
def test_unreachable_servers_are_retried_with_growing_pauses(dead_url, pauses, client):
    with pytest.raises(ServerUnavailableError):
        check_ready(client, dead_url, retries=3)
    # Defaults 0.25 s doubling, each scaled by a jitter factor in [0.5, 1].
    assert len(pauses) == 3
    for pause, full in zip(pauses, [0.25, 0.5, 1.0], strict=True):
        assert full / 2 <= pause <= full


def test_when_every_server_is_down_the_error_names_each(dead_url, photo):
    other = f"127.0.0.1:{free_port()}"
    with Detector([dead_url, other], retries=0) as detector, pytest.raises(ServerUnavailableError) as caught:
        detector.detect(photo)
    assert dead_url in str(caught.value) and other in str(caught.value)


def test_an_unknown_model_is_not_ready_and_the_error_lists_the_ready_ones(triton_server, photo):
    with Detector(triton_server.grpc_url, model="no_such_model") as detector:
        with pytest.raises(ModelNotReadyError, match="'no_such_model'.*ssd300_detector"):
            detector.detect(photo)


def test_a_rejected_input_is_not_retried(triton_server, photo, pauses):
    # ssd300_image refuses uint8 pixels where it expects encoded files: INVALID_ARG, no retry.
    with Detector(triton_server.grpc_url, model=contract.IMAGE_MODEL) as detector:
        with pytest.raises(InvalidInputError):
            detector.detect(photo)
    assert pauses == []


@pytest.mark.parametrize("server_side_decode", [False, True], ids=["client-decode", "server-decode"])
def test_a_file_that_is_not_an_image_is_named_in_the_error(triton_server, tmp_path, server_side_decode):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is a text file")
    with Detector(triton_server.grpc_url, server_side_decode=server_side_decode) as detector:
        with pytest.raises(InvalidImageError, match="holiday.jpg") as caught:
            detector.detect(bad)
    assert caught.value.name == str(bad)


class HoldingRelay:
    """A TCP relay to a server that, once told to ``hold()``, stops passing the server's answers
    on: a server that has taken a request and not answered yet, on any machine."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._holding, self._closed = threading.Event(), threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self._holding.set()

    def _accept(self) -> None:
        while True:
            try:
                caller, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self._target)
            self._sockets += [caller, server]
            threading.Thread(target=self._pass, args=(caller, server, False), daemon=True).start()
            threading.Thread(target=self._pass, args=(server, caller, True), daemon=True).start()

    def _pass(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self._holding.is_set():
                    self._closed.wait()  # held until the relay closes
                    return
                sink.sendall(data)
        except OSError:  # the other side or the relay closed
            pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self._sockets:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()


@pytest.fixture
def relay(triton_server, protocol):
    relay = HoldingRelay(url_for(triton_server, protocol))
    yield relay
    relay.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_request_outliving_its_timeout_is_an_inference_timeout(relay, photo, protocol):
    with Detector(relay.url, protocol=protocol, timeout_s=2.0, shared_memory=False) as detector:
        detector.check_ready()  # health and metadata queries pass through the relay
        relay.hold()  # the server gets the request; its answer never arrives
        with pytest.raises(InferenceTimeoutError, match="did not answer"):
            detector.detect(photo)


def test_the_asyncio_client_reports_an_unreachable_server_the_same_way(dead_url):
    async def check() -> None:
        async with AsyncDetector(dead_url, protocol="http", retries=0) as detector:
            await detector.check_ready()

    with pytest.raises(ServerUnavailableError, match=dead_url):
        asyncio.run(check())
