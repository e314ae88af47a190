"""``ssd300-detect`` beyond local image files: http(s) image URLs and video files."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest

from ssd300_client.cli import main

av = pytest.importorskip("av", reason="video needs the [video] extra (PyAV)")

pytestmark = pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")


@pytest.fixture
def web_root(tmp_path, sample_paths):
    """A folder served by http.server on loopback: a sample photo, a large file, a text file."""
    root = tmp_path / "web"
    root.mkdir()
    shutil.copy(sample_paths[0], root / "000000000139.jpg")
    (root / "big.jpg").write_bytes(b"\xff" * (3 * 1024 * 1024))
    (root / "notes.txt").write_text("not an image")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


def make_clip(path, *, frames: int, fps: int = 10, size=(160, 120)):
    """A short H.264 clip: a white square moving over a dark background."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.full((height, width, 3), 30, np.uint8)
            left = (index * 7) % (width - 40)
            pixels[40:80, left : left + 40] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.server
def test_image_urls_are_downloaded_and_detected(triton_server, web_root, tmp_path, capsys):
    results = tmp_path / "results.json"
    url = f"{web_root}/000000000139.jpg"
    code = main(
        [url, "--url", triton_server.grpc_url, "--json", str(results), "--out", str(tmp_path / "out")]
    )
    assert code == 0, capsys.readouterr().err
    document = json.loads(results.read_text())
    assert document["images"][0]["file_name"] == url and document["images"][0]["id"] == 139
    assert (tmp_path / "out" / "000000000139.jpg").is_file()


@pytest.mark.server
def test_urls_over_the_size_limit_missing_or_not_images_are_skipped_and_exit_one(
    triton_server, web_root, capsys
):
    code = main(
        [
            f"{web_root}/000000000139.jpg",
            f"{web_root}/big.jpg",
            f"{web_root}/absent.jpg",
            f"{web_root}/notes.txt",
            "--url",
            triton_server.grpc_url,
            "--max-download-mb",
            "1",
            "--print",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "big.jpg" in captured.err and "limit" in captured.err
    assert "absent.jpg: HTTP 404" in captured.err
    assert "notes.txt" in captured.err  # downloaded, then refused as not an image
    assert captured.out.startswith(f"{web_root}/000000000139.jpg: ")  # named by its URL, not the temp file


def test_an_unreachable_url_is_reported_without_a_traceback(tmp_path):
    from ssd300_client.cli_inputs import DownloadError, download
    from ssd300_serving.embedded_server import free_port

    with pytest.raises(DownloadError, match="cannot download"):
        download(f"http://127.0.0.1:{free_port()}/x.jpg", tmp_path, number=0, timeout_s=5, max_bytes=10)


@pytest.mark.server
def test_a_video_gives_an_annotated_video_and_one_json_line_per_sampled_frame(triton_server, tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=25, fps=10)
    out = tmp_path / "out"
    code = main(
        [str(clip), "--url", triton_server.grpc_url, "--out", str(out), "--every", "3", "--batch-size", "4"]
    )
    assert code == 0
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, 25, 3))
    assert [line["time_s"] for line in lines] == pytest.approx([i / 10 for i in range(0, 25, 3)], abs=1e-3)
    for line in lines:
        for d in line["detections"]:
            assert set(d) >= {"xyxy", "confidence", "class_name"} and d["confidence"] > 0.05
    with av.open(str(out / "clip.mp4")) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        assert float(stream.average_rate) == pytest.approx(10 / 3, rel=1e-3)
    assert len(frames) == 9
    # The random-weights banner is drawn on every frame (red strip at the top).
    red, green, blue = frames[0][2, 80].tolist()
    assert red > 150 and green < 60 and blue < 60


@pytest.mark.server
def test_a_video_is_streamed_holding_only_the_read_ahead(triton_server, tmp_path, monkeypatch):
    """A frame's pixels are read only when the detector asks for them: at most its read-ahead
    (2 × concurrency batches) are pending at any time, whatever the video's length."""
    import ssd300_client.video as video

    clip = tmp_path / "long.mp4"
    make_clip(clip, frames=20, fps=30, size=(64, 48))
    alive, most = 0, 0
    original = video.VideoReader.frames

    def counting(self, *, every=1):
        nonlocal alive, most
        for frame in original(self, every=every):
            alive += 1
            most = max(most, alive)
            yield frame

    from ssd300_client import cli_run

    original_draw = cli_run.Run._draw

    def draw(self, detections, image):
        nonlocal alive
        alive -= 1
        return original_draw(self, detections, image)

    monkeypatch.setattr(video.VideoReader, "frames", counting)
    monkeypatch.setattr(cli_run.Run, "_draw", draw)
    code = main(
        [
            str(clip),
            "--url",
            triton_server.grpc_url,
            "--out",
            str(tmp_path),
            "--batch-size",
            "2",
            "--concurrency",
            "1",
        ]
    )
    assert code == 0
    # read-ahead: 2 × concurrency batches of 2 frames, plus the batch being read
    assert 2 <= most <= (2 * 1 + 1) * 2


def test_a_file_that_is_not_a_video_is_skipped(tmp_path, capsys):
    from ssd300_client.video import VideoError, VideoReader

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="bad.mp4"):
        VideoReader(bad)
