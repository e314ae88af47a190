"""``ssd300-detect``: detect objects in image files with SSD300 served by Triton."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .detector import Detector
from .detector_base import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from .endpoints import DEFAULT_PORTS, split_urls
from .errors import ModelNotReadyError, RandomWeightsWarning, ServerUnavailableError, SSD300Error
from .results import DEFAULT_DISPLAY_THRESHOLD, Detections
from .retry import DEFAULT_RETRIES

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SOME_IMAGES_FAILED = 1
EXIT_USAGE_OR_SERVER = 2  # bad arguments, no images, server unreachable or model not ready
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

DESCRIPTION = """\
Detect objects in images with NVIDIA's SSD300 served by Triton Inference Server.
INPUTS are image files, folders (their image files, not recursive) or glob patterns
("photos/**/*.jpg", quoted so that the shell leaves them alone)."""

EPILOG = f"""\
thresholds:
  The server returns every detection scoring above 0.05. Drawing and --print show those
  >= {DEFAULT_DISPLAY_THRESHOLD:.2f} unless --threshold is given; --json keeps all of them (as COCO
  evaluation wants) unless --threshold is given.

COCO image ids (--json):
  When every file is named by a number, like COCO's 000000123456.jpg, that number is the
  image_id (123456). Otherwise images are numbered 1, 2, 3, ... in processing order (inputs
  as given, each folder sorted by name).

exit status:
  0 all images processed; 1 some images could not be read (reported on stderr, skipped);
  2 usage error, no images found, or the server unreachable / model not ready.

examples:
  ssd300-detect client/ssd300_client/samples --out out/
  ssd300-detect "val2017/*.jpg" --json results.json --batch-size 32 --concurrency 8
  ssd300-detect photo.jpg --print --url 10.0.0.5:8001,10.0.0.6:8001
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd300-detect",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob pattern")
    output = parser.add_argument_group("output (with none of these, detections are printed)")
    output.add_argument("--out", type=Path, metavar="DIR", help="write annotated images to DIR as <name>.png")
    output.add_argument(
        "--json", type=Path, metavar="PATH", help="write COCO detection results (a JSON list) to PATH"
    )
    output.add_argument(
        "--print", action="store_true", dest="print_detections", help="print each image's detections"
    )
    output.add_argument(
        "--max-print",
        type=_positive_int,
        metavar="N",
        help="print at most N detections per image, best first (default: all)",
    )
    output.add_argument(
        "--threshold",
        type=_probability,
        metavar="SCORE",
        help=f"minimum confidence to draw/print (default {DEFAULT_DISPLAY_THRESHOLD:.2f}) "
        "and to keep in --json (default: all)",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--url",
        action="append",
        metavar="HOST:PORT",
        help="Triton server address; repeat it or separate with commas for failover "
        f"(default 127.0.0.1:{DEFAULT_PORTS['grpc']} for gRPC, 127.0.0.1:{DEFAULT_PORTS['http']} for HTTP)",
    )
    server.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="default: %(default)s")
    server.add_argument(
        "--server-side-decode",
        action="store_true",
        help="send the files as they are; the server decodes and resizes them",
    )
    server.add_argument(
        "--shared-memory",
        choices=("auto", "on", "off"),
        default="auto",
        help="pass images through system shared memory (auto: when the server is on this machine)",
    )
    server.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="per request (default: %(default)s)",
    )
    server.add_argument(
        "--retries",
        type=_non_negative_int,
        default=DEFAULT_RETRIES,
        help="retries while no server is reachable (default: %(default)s)",
    )
    work = parser.add_argument_group("throughput")
    work.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per request, 1..64 (default: %(default)s)",
    )
    work.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and failovers")
    return parser


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def collect_images(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files from the inputs, in order and without repeats, and the inputs that named nothing."""
    found: dict[Path, None] = {}
    missing = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            matches = [path]  # named explicitly: tried whatever its suffix
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            matches = []
        if not matches and not path.is_dir():
            missing.append(spec)
        for match in matches:
            found.setdefault(match, None)
    return list(found), missing


def coco_image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO-style numeric file names give their number; otherwise 1, 2, 3, … in order."""
    stems = [path.stem for path in paths]
    if stems and all(stem.isdigit() for stem in stems):
        numbers = [int(stem) for stem in stems]
        if len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(paths) + 1))


def annotated_path(out_dir: Path, source: Path, taken: set[Path]) -> Path:
    candidate, counter = out_dir / f"{source.stem}.png", 1
    while candidate in taken:  # photos/a.jpg and more/a.png both give a.png
        counter += 1
        candidate = out_dir / f"{source.stem}_{counter}.png"
    taken.add(candidate)
    return candidate


def format_detections(detections: Detections, *, limit: int | None = None) -> str:
    """One line per detection (highest confidence first), at most ``limit`` of them."""
    lines = [f"{detections.name}: {len(detections)} object{'s' if len(detections) != 1 else ''}"]
    for number, d in enumerate(detections):
        if limit is not None and number == limit:
            lines.append(f"  … and {len(detections) - limit} more")
            break
        box = ", ".join(f"{v:.1f}" for v in d.xyxy)
        lines.append(f"  {d.class_name:<16} {d.confidence:.3f}  [{box}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return the code, as promised
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE_OR_SERVER
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the detector logs it as a warning already
        return _detect_files(args)


def _detect_files(args: argparse.Namespace) -> int:
    try:
        urls = split_urls(args.url) if args.url else [f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}"]
    except ValueError as exc:
        return _fail(str(exc))
    paths, missing = collect_images(args.inputs)
    for spec in missing:
        print(f"skipped {spec}: no such file, folder or matching files", file=sys.stderr)
    if not paths:
        return _fail("no images to process") if not missing else EXIT_SOME_IMAGES_FAILED
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    modes: dict[str, str | bool] = {"auto": "auto", "on": True, "off": False}
    shared_memory = modes[args.shared_memory]
    try:
        detector = Detector(
            urls,
            protocol=args.protocol,
            timeout_s=args.timeout,
            retries=args.retries,
            server_side_decode=args.server_side_decode,
            shared_memory=shared_memory,
        )
    except ValueError as exc:  # a malformed address
        return _fail(str(exc))
    with detector, logging_redirect_tqdm():
        try:
            detector.check_ready()
            return _run(detector, paths, args, failed=len(missing))
        except (ServerUnavailableError, ModelNotReadyError) as exc:
            return _fail(str(exc))
        except SSD300Error as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SOME_IMAGES_FAILED


def _run(detector: Detector, paths: list[Path], args: argparse.Namespace, *, failed: int) -> int:
    display_threshold = DEFAULT_DISPLAY_THRESHOLD if args.threshold is None else args.threshold
    print_detections = args.print_detections or not (args.out or args.json)
    image_ids = coco_image_ids(paths)
    coco_results: list[dict] = []
    taken: set[Path] = set()
    done = shown = 0
    start = time.perf_counter()
    outcomes = detector.detect_iter(paths, concurrency=args.concurrency, batch_size=args.batch_size)
    with tqdm(
        outcomes, total=len(paths), unit="img", desc="detecting", file=sys.stderr, leave=False, disable=None
    ) as progress:
        for index, outcome in progress:
            if not isinstance(outcome, Detections):
                failed += 1
                progress.write(f"skipped {outcome}", file=sys.stderr)
                continue
            done += 1
            shown_detections = outcome.filter(display_threshold)
            shown += len(shown_detections)
            if args.json:
                kept = outcome if args.threshold is None else shown_detections
                coco_results.extend(kept.to_coco(image_ids[index]))
            if args.out:
                drawn = outcome.draw(paths[index], threshold=display_threshold)
                drawn.save(annotated_path(args.out, paths[index], taken))
            if print_detections:
                progress.write(format_detections(shown_detections, limit=args.max_print), file=sys.stdout)
    elapsed_s = time.perf_counter() - start
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(coco_results))
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    summary = (
        f"{done} image{'s' if done != 1 else ''}, {shown} detections >= {display_threshold:.2f}, "
        f"{elapsed_s:.1f} s ({rate:.1f} images/s)" + (f"; {failed} skipped" if failed else "")
    )
    print(summary, file=sys.stderr)
    return EXIT_SOME_IMAGES_FAILED if failed else EXIT_OK


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE_OR_SERVER


if __name__ == "__main__":
    sys.exit(main())
