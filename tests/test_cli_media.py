"""``ssd300-detect`` beyond local image files: http(s) image URLs and video files."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import ssl
import threading
import time

import numpy as np
import pytest

from ssd300_client.cli import main
from ssd300_client.cli_inputs import DownloadError, download

from .helpers.certificates import make_certificates

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
    with serving(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url


@contextlib.contextmanager
def serving(handler, *, tls: ssl.SSLContext | None = None):
    """A loopback HTTP server (HTTPS with ``tls``) with ``handler``; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True  # a handler still trickling bytes must not hold up shutdown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        # The test certificate names localhost.
        yield f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


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


@pytest.mark.server
def test_a_file_that_is_not_a_video_is_skipped_and_the_run_goes_on(triton_server, tmp_path, capsys):
    bad, clip = tmp_path / "bad.mp4", tmp_path / "good.mp4"
    bad.write_bytes(b"not a video at all")
    make_clip(clip, frames=3)
    out = tmp_path / "out"
    code = main([str(bad), str(clip), "--url", triton_server.grpc_url, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"skipped {bad}: not a video PyAV can read" in err and "Traceback" not in err
    assert len((out / "good.jsonl").read_text().splitlines()) == 3  # the next input was still detected
    assert not (out / "bad.mp4").exists() and not (out / "bad.jsonl").exists()
    assert err.rstrip().endswith("; 1 skipped")


# ----- downloads' limits, without a server -----


class _AwkwardHandler(http.server.BaseHTTPRequestHandler):
    """Answers that stay under every per-read timeout but break the download's limits."""

    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        try:
            if self.path == "/trickle.jpg":  # one byte every 0.1 s: each read is quick
                self.send_response(200)
                self.send_header("Content-Length", "600")
                self.end_headers()
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/slow-headers.jpg":  # the headers themselves trickle
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                for _ in range(600):
                    self.wfile.write(b"X-Padding: 1\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/unsized.jpg":  # no Content-Length, 2 MB
                self.send_response(200)
                self.end_headers()
                for _ in range(32):
                    self.wfile.write(b"\xff" * 65536)
            elif self.path == "/to-ftp.jpg":
                self.send_response(302)
                self.send_header("Location", "ftp://127.0.0.1/photo.jpg")
                self.end_headers()
            elif self.path == "/to-file.jpg":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: its point
            pass


@pytest.fixture
def awkward_server():
    with serving(_AwkwardHandler) as url:
        yield url


def _fetch(url, tmp_path, capsys, *options):
    """Run.fetch as the CLI runs it (no server needed): (files fetched, skipped, stderr)."""
    from ssd300_client.cli import build_parser
    from ssd300_client.cli_run import Run

    run = Run(None, build_parser().parse_args([url, *options]), failed=0)
    fetched = run.fetch([url], tmp_path)
    return fetched, run.failed, capsys.readouterr().err


@pytest.mark.parametrize("name", ["trickle.jpg", "slow-headers.jpg"])
def test_timeout_bounds_a_whole_download_not_each_read(awkward_server, name, tmp_path, capsys):
    url = f"{awkward_server}/{name}"
    start = time.monotonic()
    fetched, skipped, err = _fetch(url, tmp_path, capsys, "--timeout", "1")
    # The answer would trickle for a minute (600 × 0.1 s); the 1 s deadline must cut it short.
    # A bound far from both keeps the machine's load out of the verdict.
    assert time.monotonic() - start < 15
    assert fetched == [] and skipped == 1  # skipped: the run exits 1
    assert err == f"skipped {url}: not downloaded within 1 s (--timeout)\n"


def test_the_size_limit_holds_without_a_content_length(awkward_server, tmp_path, capsys):
    url = f"{awkward_server}/unsized.jpg"
    fetched, skipped, err = _fetch(url, tmp_path, capsys, "--max-download-mb", "1")
    assert fetched == [] and skipped == 1
    assert err == f"skipped {url}: more than the 1048576-byte limit\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "scheme"), [("to-ftp.jpg", "ftp"), ("to-file.jpg", "file")])
def test_redirects_only_to_http_urls_are_followed(awkward_server, name, scheme, tmp_path, capsys):
    url = f"{awkward_server}/{name}"
    fetched, skipped, err = _fetch(url, tmp_path, capsys)
    assert fetched == [] and skipped == 1
    assert err.startswith(f"skipped {url}: ") and "Traceback" not in err
    assert f"{scheme}:" in err


# ----- video outputs, without a server -----


def test_a_video_writer_that_cannot_write_raises_video_error(tmp_path):
    from ssd300_client.video import VideoError, VideoWriter

    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(VideoError, match="full.mp4"):
        with VideoWriter(full, fps=10, width=64, height=48) as writer:
            for _ in range(60):
                writer.write(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))


def test_a_video_with_json_but_no_out_says_where_its_detections_go(tmp_path, capsys):
    from contextlib import ExitStack

    from ssd300_client.cli import build_parser
    from ssd300_client.cli_run import Run
    from ssd300_client.video import VideoReader

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2)
    run = Run(None, build_parser().parse_args([str(clip), "--json", str(tmp_path / "r.json")]), failed=0)
    with ExitStack() as stack:
        reader = stack.enter_context(VideoReader(clip))
        assert run._video_outputs(stack, reader) == (None, None)
    note = " ".join(capsys.readouterr().err.split())
    assert note.startswith(f"note: {clip}: a video's detections go to --out DIR (as JSON lines")
    assert "not to --json or --save-txt" in note and "only counted" in note


def test_https_urls_are_fetched_within_the_deadline_trusting_the_systems_store(tmp_path, monkeypatch):
    certificates = make_certificates(tmp_path)
    web = tmp_path / "web"
    web.mkdir()
    (web / "photo.jpg").write_bytes(b"\xff" * 1000)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificates.server_cert, certificates.server_key)
    handler = functools.partial(_QuietHandler, directory=str(web))
    with serving(handler, tls=tls) as url:
        with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
            download(f"{url}/photo.jpg", tmp_path, number=1, timeout_s=5, max_bytes=10**6)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_cert))  # the test CA, trusted
        fetched = download(f"{url}/photo.jpg", tmp_path, number=2, timeout_s=5, max_bytes=10**6)
    assert fetched.read_bytes() == b"\xff" * 1000
