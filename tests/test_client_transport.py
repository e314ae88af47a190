"""Addresses, retry timing, error translation and shared-memory regions, without a server."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from ssd300_client import (
    Detector,
    InferenceError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from ssd300_client.endpoints import is_loopback, normalise_url, split_urls
from ssd300_client.retry import backoff_delays_s
from ssd300_client.shared_memory import SharedMemoryPool
from ssd300_client.transport import Endpoint, Operation, translate_error, translated_errors
from ssd300_common import contract

# ----- addresses -----


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("127.0.0.1:9001", "grpc", "127.0.0.1:9001"),
        ("localhost", "grpc", "localhost:8001"),
        ("localhost", "http", "localhost:8000"),
        ("http://triton.internal:8000/", "http", "triton.internal:8000"),
        ("grpc://[::1]:8001", "grpc", "[::1]:8001"),
        ("[::1]", "grpc", "[::1]:8001"),
    ],
)
def test_addresses_are_normalised_to_host_and_port(url, protocol, expected):
    assert normalise_url(url, protocol=protocol) == expected


@pytest.mark.parametrize("url", ["", "host:notaport", "host:70000", "http://host:8000/v2/models"])
def test_malformed_addresses_are_refused(url):
    with pytest.raises(ValueError):
        normalise_url(url, protocol="grpc")


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:8001", True),
        ("127.8.9.10:1", True),
        ("localhost:8001", True),
        ("[::1]:8001", True),
        ("10.0.0.5:8001", False),
        ("triton.example.com:8001", False),
    ],
)
def test_only_loopback_addresses_count_as_local(address, local):
    assert is_loopback(address) is local


def test_urls_may_be_listed_comma_separated_or_both():
    assert split_urls(["a:1,b:2", " c:3 "]) == ["a:1", "b:2", "c:3"]
    assert split_urls("a:1") == ["a:1"]


def test_a_detector_needs_at_least_one_url():
    with pytest.raises(ValueError, match="at least one"):
        Detector([])


def test_unknown_protocols_and_shared_memory_modes_are_refused():
    with pytest.raises(ValueError, match="protocol"):
        Detector("127.0.0.1:1", protocol="websocket")
    with pytest.raises(ValueError, match="shared_memory"):
        Detector("127.0.0.1:1", shared_memory="sometimes")


# ----- backoff -----


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_first_attempt_is_immediate_then_delays_double():
    # base 0.25 s, full jitter factor 1.0: 0, 0.25, 0.5, 1.0
    assert backoff_delays_s(3, base_s=0.25, max_s=10, rng=FixedRandom(1.0)) == [0.0, 0.25, 0.5, 1.0]


def test_jitter_can_halve_each_delay():
    # factor 0.5 + 0.5 · 0 = 0.5: 0, 0.125, 0.25
    assert backoff_delays_s(2, base_s=0.25, max_s=10, rng=FixedRandom(0.0)) == [0.0, 0.125, 0.25]


def test_delays_are_capped():
    # 0.25 · 2^9 = 128 s uncapped; capped at 4 s.
    assert max(backoff_delays_s(10, base_s=0.25, max_s=4.0, rng=FixedRandom(1.0))) == 4.0


def test_no_retries_means_one_immediate_attempt():
    assert backoff_delays_s(0) == [0.0]


# ----- error translation -----


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("StatusCode.UNAVAILABLE", ServerUnavailableError),
        ("503", ServerUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", InferenceTimeoutError),
        ("StatusCode.NOT_FOUND", ModelNotReadyError),
        ("404", ModelNotReadyError),
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError),
        ("400", InvalidInputError),
        ("StatusCode.INTERNAL", InferenceError),
        ("500", InferenceError),
    ],
)
def test_server_statuses_map_to_typed_errors(status, expected):
    error = translate_error(InferenceServerException("boom", status=status), where="h:1 (grpc)", model="m")
    assert type(error) is expected and "boom" in str(error)


def test_a_refused_connection_is_unavailable_never_a_timeout():
    error = translate_error(ConnectionRefusedError(111, "Connection refused"), where="h:1 (http)", model="m")
    assert isinstance(error, ServerUnavailableError) and not isinstance(error, TimeoutError)


def test_a_socket_timeout_during_inference_is_an_inference_timeout():
    assert isinstance(
        translate_error(TimeoutError("timed out"), where="h:1 (http)", model="m"), InferenceTimeoutError
    )


def test_a_timeout_on_a_health_query_means_the_server_is_unavailable():
    error = translate_error(
        InferenceServerException("late", status="StatusCode.DEADLINE_EXCEEDED"),
        where="h:1",
        model="m",
        control=True,
    )
    assert isinstance(error, ServerUnavailableError)


def test_errors_that_are_not_transport_failures_pass_through():
    with pytest.raises(KeyError), translated_errors("h:1", "m"):
        raise KeyError("a bug, not the network")


def test_typed_errors_are_raised_from_the_transport_error():
    original = InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT")
    with pytest.raises(InvalidInputError) as caught, translated_errors("h:1", "m"):
        raise original
    assert caught.value.__cause__ is original


# ----- shared memory -----


def test_regions_get_unique_names_and_are_reused_after_release():
    pool = SharedMemoryPool(unit_bytes=1000)
    try:
        first, second = pool.acquire(1000), pool.acquire(1000)
        assert first.name != second.name
        pool.release(first)
        assert pool.acquire(900) is first
    finally:
        pool.close()


def test_region_sizes_round_up_to_a_power_of_two_images():
    pool = SharedMemoryPool(unit_bytes=1000)
    try:
        assert pool.acquire(3000).byte_size == 4000  # 3 images → room for 4
        assert pool.acquire(1).byte_size == 1000
    finally:
        pool.close()


def test_a_region_refuses_data_larger_than_itself():
    pool = SharedMemoryPool(unit_bytes=16)
    try:
        with pool.lease(16) as region, pytest.raises(ValueError, match="do not fit"):
            region.write(np.zeros(32, dtype=np.uint8))
    finally:
        pool.close()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory lives in /dev/shm on Linux")
def test_closing_the_pool_removes_its_shared_memory_objects():
    pool = SharedMemoryPool(unit_bytes=64)
    region = pool.acquire(64)
    assert os.path.exists("/dev/shm" + region.key)
    pool.close()
    assert not os.path.exists("/dev/shm" + region.key)


# ----- shared memory fallback (a server that cannot map this machine's regions) -----


# What the stand-in answers to health and metadata queries.
METADATA = {"is_model_ready": True, "get_model_config": {}, "get_model_repository_index": {"models": []}}


class ServerInAnotherContainer(Endpoint):
    """A stand-in Connection: answers like a loopback server that cannot open our regions."""

    def __init__(self, url, *, protocol, timeout_s, tls=None):
        super().__init__(url, protocol=protocol, timeout_s=timeout_s, tls=tls)
        self.inputs = []  # the image tensor of each inference (tritonclient InferInput)

    def call(self, operation: Operation):
        if operation.method == "register_system_shared_memory":
            raise InferenceError(f"Unable to open shared memory region: '{operation.args[1]}'")
        if operation.method != "infer":
            return operation.reply(METADATA[operation.method])
        _, [images] = operation.args
        self.inputs.append(images)
        count = images.shape()[0]
        return operation.reply(Answer(count))

    def close(self):
        pass


class Answer:
    """An empty answer for ``count`` images, shaped like tritonclient's InferResult."""

    def __init__(self, count):
        self.arrays = {
            contract.BOXES_OUTPUT: np.zeros((count, 200, 4), np.float32),
            contract.SCORES_OUTPUT: np.zeros((count, 200), np.float32),
            contract.CLASSES_OUTPUT: np.zeros((count, 200), np.int32),
            contract.COUNT_OUTPUT: np.zeros((count, 1), np.int32),
        }

    def as_numpy(self, name):
        return self.arrays[name]


@pytest.fixture
def unmappable_server(monkeypatch):
    monkeypatch.setattr(Detector, "_connection_class", ServerInAnotherContainer)


def test_auto_shared_memory_falls_back_to_sending_pixels(unmappable_server, caplog):
    with Detector("127.0.0.1:8001", shared_memory="auto") as detector:
        detector.detect(np.zeros((8, 8, 3), np.uint8))
        [connection] = detector._connections
    [images] = connection.inputs
    # tritonclient keeps what it will send privately: the pixels, and no shared-memory parameters.
    assert images._get_content() is not None
    assert "shared_memory_region" not in images._get_tensor().parameters
    assert "shared memory" in caplog.text


def test_required_shared_memory_fails_loudly_when_the_server_cannot_map_it(unmappable_server):
    with (
        Detector("127.0.0.1:8001", shared_memory=True) as detector,
        pytest.raises(InferenceError, match="shared memory"),
    ):
        detector.detect(np.zeros((8, 8, 3), np.uint8))


# ----- TLS -----


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("grpcs://triton.example.com:443", "grpc", ("triton.example.com:443", True)),
        ("https://triton.example.com", "http", ("triton.example.com:8000", True)),
        ("grpc://127.0.0.1:8001", "grpc", ("127.0.0.1:8001", False)),
        ("127.0.0.1:8001", "grpc", ("127.0.0.1:8001", False)),
    ],
)
def test_secure_schemes_turn_tls_on(url, protocol, expected):
    from ssd300_client.endpoints import parse_url

    assert parse_url(url, protocol=protocol) == expected


def test_a_scheme_of_the_other_protocol_is_refused():
    from ssd300_client.endpoints import parse_url

    with pytest.raises(ValueError, match="is a http address"):
        parse_url("https://h:443", protocol="grpc")


def test_tls_files_map_onto_tritonclients_options(tmp_path):
    from ssd300_client import TLS

    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("x")
    tls = TLS(
        ca_cert=str(tmp_path / "ca.pem"),
        client_cert=str(tmp_path / "c.pem"),
        client_key=str(tmp_path / "c.key"),
    )
    assert tls.grpc_options() == {
        "ssl": True,
        "root_certificates": str(tmp_path / "ca.pem"),
        "private_key": str(tmp_path / "c.key"),
        "certificate_chain": str(tmp_path / "c.pem"),
    }
    assert tls.http_options() == {
        "ssl": True,
        "ssl_options": {
            "ca_certs": str(tmp_path / "ca.pem"),
            "certfile": str(tmp_path / "c.pem"),
            "keyfile": str(tmp_path / "c.key"),
        },
    }


def test_tls_applies_to_secure_addresses_or_to_all_when_given(tmp_path):
    from ssd300_client import TLS

    with Detector(["grpcs://a:1", "b:2"], shared_memory=False) as detector:
        assert [bool(tls) for tls in detector.tls] == [True, False]
        assert "over TLS" in detector._connections[0].where
    given = TLS()
    with Detector(["a:1", "b:2"], tls=given, shared_memory=False) as detector:
        assert detector.tls == (given, given)
