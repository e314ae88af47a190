"""Detector and AsyncDetector against the session's tritonserver: every transport path gives
the same detections, images of every kind are accepted, batches keep their order."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import warnings
import weakref

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from numpy.testing import assert_array_equal
from PIL import Image

from ssd300_client import (
    AsyncDetector,
    Detections,
    Detector,
    InvalidImageError,
    RandomWeightsWarning,
    SSD300Error,
)
from ssd300_client.shared_memory import Region, SharedMemoryPool

from .helpers.comparisons import assert_same_detections
from .helpers.triton_calls import url_for

pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")]

EXIF_ORIENTATION = 0x0112


def registered_regions(server) -> set[str]:
    """System shared-memory regions the server has registered, by name."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        status = client.get_system_shared_memory_status(as_json=True)
    finally:
        client.close()
    return set(status.get("regions", {}))


@pytest.fixture(scope="module")
def photo(sample_paths):
    return sample_paths[-1]  # rocket.jpg, 427×640 (width × height): a portrait photo


@pytest.fixture(scope="module")
def reference(triton_server, photo) -> Detections:
    """gRPC, client-side decode, no shared memory: the path the others are compared with."""
    with Detector(triton_server.grpc_url, shared_memory=False) as detector:
        return detector.detect(photo)


def test_a_photo_yields_detections_in_its_own_pixels(reference, photo):
    width, height = Image.open(photo).size
    assert reference.image_size == (height, width)
    assert len(reference) > 0
    assert (
        (reference.xyxy >= 0).all()
        and (reference.xyxy[:, [0, 2]] <= width).all()
        and (reference.xyxy[:, [1, 3]] <= height).all()
    )
    assert (reference.confidence > 0.05).all() and (np.diff(reference.confidence) <= 0).all()


SYNC_PATHS = {
    "grpc+shared-memory": dict(protocol="grpc", shared_memory=True),
    "http": dict(protocol="http", shared_memory=False),
    "http+shared-memory": dict(protocol="http", shared_memory=True),
    "grpc+server-decode": dict(protocol="grpc", server_side_decode=True),
    "http+server-decode": dict(protocol="http", server_side_decode=True),
}


@pytest.mark.parametrize("path", SYNC_PATHS)
def test_every_transport_path_gives_the_same_detections(triton_server, photo, reference, path):
    options = SYNC_PATHS[path]
    with Detector(url_for(triton_server, options["protocol"]), **options) as detector:
        assert_same_detections(detector.detect(photo), reference)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_asyncio_client_gives_the_same_detections(triton_server, photo, reference, protocol):
    async def detect() -> Detections:
        async with AsyncDetector(url_for(triton_server, protocol), protocol=protocol) as detector:
            return await detector.detect(photo)

    assert_same_detections(asyncio.run(detect()), reference)


def test_a_path_its_bytes_a_pil_image_and_an_array_give_the_same_detections(triton_server, photo, reference):
    picture = Image.open(photo)
    images = [photo, photo.read_bytes(), picture, np.asarray(picture.convert("RGB"))]
    with Detector(triton_server.grpc_url) as detector:
        results = detector.detect_many(images, batch_size=4)
    for result in results:
        assert_same_detections(result, reference)


def test_threshold_keeps_only_confident_detections(triton_server, photo, reference):
    with Detector(triton_server.grpc_url) as detector:
        confident = detector.detect(photo, threshold=0.9)
    assert_array_equal(confident.class_id, reference.filter(0.9).class_id)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_request_parameters_reach_the_postprocess(triton_server, photo, reference, protocol):
    # max_detections=5 keeps the five highest-scoring detections of the default answer.
    with Detector(
        url_for(triton_server, protocol), protocol=protocol, parameters={"max_detections": 5}
    ) as detector:
        top = detector.detect(photo)
    assert len(top) == 5
    assert_array_equal(top.class_id, reference.class_id[:5])


def test_an_exif_rotated_jpeg_is_detected_upright_by_client_and_server(triton_server, photo):
    # Store the photo turned 90° counter-clockwise with orientation 6 ("turn clockwise to view").
    upright = Image.open(photo).convert("RGB")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    tagged = buffer.getvalue()
    with (
        Detector(triton_server.grpc_url) as client_side,
        Detector(triton_server.grpc_url, server_side_decode=True) as server_side,
    ):
        here, there = client_side.detect(tagged), server_side.detect(tagged)
    assert here.image_size == (upright.height, upright.width)
    assert (here.xyxy[:, [0, 2]] <= upright.width).all() and (here.xyxy[:, [1, 3]] <= upright.height).all()
    assert_same_detections(there, here)


@pytest.mark.parametrize("server_side_decode", [False, True], ids=["client-decode", "server-decode"])
def test_detect_many_keeps_input_order_and_reports_bad_images_in_place(
    triton_server, sample_paths, server_side_decode
):
    images = [sample_paths[0], b"\x89PNG but not really", sample_paths[1], sample_paths[2]]
    with Detector(triton_server.grpc_url, server_side_decode=server_side_decode) as detector:
        results = detector.detect_many(images, batch_size=2, concurrency=2, return_exceptions=True)
    assert [r.name for r in results] == [
        str(sample_paths[0]),
        "images[1]",
        str(sample_paths[1]),
        str(sample_paths[2]),
    ]
    assert isinstance(results[1], InvalidImageError)
    assert [r.image_size for r in results if isinstance(r, Detections)] == [
        Image.open(p).size[::-1] for p in (sample_paths[0], *sample_paths[1:3])
    ]


def test_detect_many_raises_for_a_bad_image_unless_told_otherwise(triton_server):
    with Detector(triton_server.grpc_url) as detector, pytest.raises(InvalidImageError, match=r"images\[0\]"):
        detector.detect_many([b"junk"])


def test_the_asyncio_client_batches_in_input_order(triton_server, sample_paths):
    async def detect_many() -> list:
        async with AsyncDetector(triton_server.http_url, protocol="http") as detector:
            return await detector.detect_many(
                [sample_paths[0], b"junk", sample_paths[1]], batch_size=2, return_exceptions=True
            )

    results = asyncio.run(detect_many())
    assert [r.name for r in results] == [str(sample_paths[0]), "images[1]", str(sample_paths[1])]
    assert isinstance(results[1], InvalidImageError)


def test_the_first_detection_warns_once_that_the_weights_are_random(triton_server, photo):
    with Detector(triton_server.grpc_url) as detector:
        with pytest.warns(RandomWeightsWarning, match="random"):
            detector.detect(photo)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RandomWeightsWarning)
            detector.detect(photo)
        assert detector.server_weights == "random"


# ----- shared memory -----


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_loopback_servers_get_images_through_shared_memory_released_on_close(triton_server, photo, protocol):
    before = registered_regions(triton_server)
    detector = Detector(url_for(triton_server, protocol), protocol=protocol)  # shared_memory="auto"
    detector.detect(photo)
    ours = registered_regions(triton_server) - before
    assert ours and all(name.startswith("ssd300_client_") for name in ours)
    detector.close()
    assert not registered_regions(triton_server) & ours
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in ours)


def test_shared_memory_can_be_turned_off(triton_server, photo):
    before = registered_regions(triton_server)
    with Detector(triton_server.grpc_url, shared_memory=False) as detector:
        detector.detect(photo)
        assert registered_regions(triton_server) == before


def test_concurrent_batches_each_lease_their_own_region(triton_server, sample_paths, reference, monkeypatch):
    # Each lease waits until all four are taken, so the four requests hold their regions at once.
    everyone_leased = threading.Barrier(4, timeout=60)
    leased: list[str] = []
    acquire = SharedMemoryPool.acquire

    def acquire_together(pool: SharedMemoryPool, byte_size: int) -> Region:
        region = acquire(pool, byte_size)
        leased.append(region.name)
        everyone_leased.wait()  # BrokenBarrierError if fewer than four leases can be held together
        return region

    monkeypatch.setattr(SharedMemoryPool, "acquire", acquire_together)
    before = registered_regions(triton_server)
    with Detector(triton_server.grpc_url, shared_memory=True) as detector:
        results = detector.detect_many([sample_paths[-1]] * 4, batch_size=1, concurrency=4)
        registered = registered_regions(triton_server) - before
    assert len(set(leased)) == 4 and registered == set(leased)
    for result in results:
        assert_same_detections(result, reference)


# ----- bounded read-ahead -----


class CountedFrames:
    """``count`` new uint8 frames (copies of one photo), as a video would give them: counts
    those handed out and those still alive somewhere, and the most alive at any time."""

    def __init__(self, photo, count: int) -> None:
        self._pixels = np.asarray(Image.open(photo).convert("RGB"))
        self.count, self.handed_out, self.alive, self.most_alive = count, 0, 0, 0
        self._lock = threading.Lock()  # frames die on worker threads

    def __iter__(self):
        for _ in range(self.count):
            frame = self._pixels.copy()
            weakref.finalize(frame, self._died)
            with self._lock:
                self.handed_out += 1
                self.alive += 1
                self.most_alive = max(self.most_alive, self.alive)
            yield frame
            del frame  # the generator's own reference

    def _died(self) -> None:
        with self._lock:
            self.alive -= 1


def detect_all(client: str, url: str, frames: CountedFrames, way: str, **options) -> list:
    """Outcomes of ``frames`` through Detector or AsyncDetector, by ``detect_many`` or
    ``detect_iter`` (dropping each result as it comes, as a video pipeline would)."""
    if client == "blocking":
        with Detector(url) as detector:
            if way == "detect_many":
                return detector.detect_many(frames, **options)
            return [(index, len(detections)) for index, detections in detector.detect_iter(frames, **options)]

    async def detect() -> list:
        async with AsyncDetector(url) as detector:
            if way == "detect_many":
                return await detector.detect_many(frames, **options)
            return [
                (index, len(detections))
                async for index, detections in detector.detect_iter(frames, **options)
            ]

    return asyncio.run(detect())


@pytest.mark.parametrize("way", ["detect_many", "detect_iter"])
@pytest.mark.parametrize("client", ["blocking", "asyncio"])
def test_images_are_read_at_most_two_batches_per_request_ahead(triton_server, photo, reference, client, way):
    frames = CountedFrames(photo, count=4)
    outcomes = detect_all(client, triton_server.grpc_url, frames, way, batch_size=1, concurrency=1)
    assert frames.handed_out == len(outcomes) == 4
    # One request in flight, one image per batch: the one at the server and the next one read.
    assert frames.most_alive <= 2 * 1 * 1
    assert frames.alive == 0  # results hold no frames
    if way == "detect_iter":
        assert outcomes == [(index, len(reference)) for index in range(4)]
    else:
        for result in outcomes:
            assert_same_detections(result, reference)


def test_a_kept_image_error_does_not_keep_its_batch_alive(triton_server, photo):
    frame = np.asarray(Image.open(photo).convert("RGB")).copy()
    frame_alive = weakref.ref(frame)
    with Detector(triton_server.grpc_url) as detector:
        results = detector.detect_many([frame, b"junk"], batch_size=2, return_exceptions=True)
    del frame
    assert isinstance(results[1], InvalidImageError)
    assert frame_alive() is None  # a traceback would keep the frames that held the batch


def test_the_asyncio_client_iterates_in_input_order_with_bad_images_in_place(triton_server, sample_paths):
    images = [sample_paths[0], b"junk", sample_paths[1]]

    async def detect_iter() -> list:
        async with AsyncDetector(triton_server.grpc_url) as detector:
            return [pair async for pair in detector.detect_iter(images, batch_size=2, threshold=0.3)]

    pairs = asyncio.run(detect_iter())
    assert [index for index, _ in pairs] == [0, 1, 2]
    assert isinstance(pairs[1][1], InvalidImageError)
    assert all((outcome.confidence >= 0.3).all() for _, outcome in (pairs[0], pairs[2]))


def test_a_closed_detector_refuses_to_work(triton_server, photo):
    detector = Detector(triton_server.grpc_url)
    detector.close()
    detector.close()  # idempotent
    with pytest.raises(SSD300Error, match="closed"):
        detector.detect(photo)
