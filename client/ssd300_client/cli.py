"""``ssd300-detect``: detect objects in images, image URLs and videos with SSD300 served by Triton."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from ssd300_common import contract
from ssd300_common.labels import parse_classes

from .cli_inputs import DEFAULT_MAX_DOWNLOAD_MB, collect_inputs
from .cli_outputs import OUTPUT_FORMATS, OutputError, prepare_file, prepare_folder
from .cli_run import Run
from .detector import Detector
from .detector_base import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from .endpoints import DEFAULT_PORTS, scheme_protocol, split_urls
from .errors import ModelNotReadyError, RandomWeightsWarning, ServerUnavailableError, SSD300Error
from .results import DEFAULT_DISPLAY_THRESHOLD
from .retry import DEFAULT_RETRIES
from .tls import TLS

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # inputs skipped, or the run stopped on an error after it began
EXIT_USAGE_OR_SERVER = 2  # bad arguments or outputs, no inputs found, server unreachable or model not ready

DESCRIPTION = """\
Detect objects with NVIDIA's SSD300 served by Triton Inference Server.
INPUTS are image files, http(s):// image URLs, video files (MP4, AVI, MKV, WebM, MOV),
folders (their images and videos; --recursive for subfolders too) or glob patterns
("photos/**/*.jpg", quoted so that the shell leaves them alone)."""

EPILOG = f"""\
thresholds:
  The server returns every detection scoring above --min-score (default
  {contract.SERVER_SCORE_THRESHOLD}). Drawing and --print show those >= {DEFAULT_DISPLAY_THRESHOLD:.2f} unless
  --threshold is given; --json, --save-txt and videos' JSON lines keep all of them (as COCO
  evaluation wants) unless --threshold is given. --classes applies to every output.

COCO image ids (--json):
  When every file is named by a number, like COCO's 000000123456.jpg, that number is the
  image_id (123456). Otherwise images are numbered 1, 2, 3, ... in processing order (inputs
  as given, each folder sorted by name). The file's "images" list maps each id to its file.

exit status:
  0 every input processed;
  1 some inputs were skipped (could not be read, downloaded or decoded; each reported on
    stderr), or the run stopped on an error after it began (an inference timeout, a server
    error, an output that could not be written; reported as "error:"); outputs already
    written are kept;
  2 usage error (bad option, output path that cannot be created; reported before any
    request), no inputs found, or the server unreachable / model not ready.

examples:
  ssd300-detect common/ssd300_common/samples --out out/
  ssd300-detect "val2017/*.jpg" --json results.json --batch-size 32 --concurrency 8
  ssd300-detect clip.mp4 --out out/ --every 5 --classes person,car
  ssd300-detect https://example.com/photo.jpg --print --url grpcs://triton.example.com:443
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd300-detect",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image, URL, video, folder or glob")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--recursive", action="store_true", help="search folders' subfolders too")
    inputs.add_argument(
        "--every", type=_positive_int, default=1, metavar="N", help="videos: every N-th frame (default 1)"
    )
    inputs.add_argument(
        "--max-download-mb",
        type=_positive_float,
        default=DEFAULT_MAX_DOWNLOAD_MB,
        metavar="MB",
        help="largest image a URL may give (default: %(default)s); --timeout bounds each whole download",
    )
    output = parser.add_argument_group("output (with none of these, detections are printed)")
    output.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="annotated images (in the input's format) and videos (<name>.mp4 + <name>.jsonl)",
    )
    output.add_argument(
        "--format", choices=sorted(OUTPUT_FORMATS), help="annotated images' format (default: the input's)"
    )
    output.add_argument(
        "--json", type=Path, metavar="PATH", help="write COCO results (images, annotations) to PATH"
    )
    output.add_argument(
        "--save-txt",
        type=Path,
        metavar="DIR",
        help="one <name>.txt per image: 'class cx cy w h confidence' per line, YOLO-style "
        "(0-based class, box normalised to the image)",
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
        "and to keep in --json/--save-txt/JSON lines (default: all)",
    )
    settings = parser.add_argument_group("detection settings (sent to the server with each request)")
    settings.add_argument(
        "--min-score",
        type=_probability,
        metavar="SCORE",
        help=f"server-side score threshold (default {contract.SERVER_SCORE_THRESHOLD})",
    )
    settings.add_argument(
        "--iou",
        type=_probability,
        metavar="IOU",
        help=f"NMS IoU threshold (default {contract.POSTPROCESS_DEFAULTS[contract.NMS_IOU_PARAMETER]})",
    )
    settings.add_argument(
        "--max-det",
        type=_bounded_int(1, contract.MAX_DETECTIONS),
        metavar="N",
        help=f"detections per image, 1..{contract.MAX_DETECTIONS} (default {contract.MAX_DETECTIONS})",
    )
    settings.add_argument(
        "--classes",
        type=_classes,
        metavar="LIST",
        help="keep only these classes: COCO names or category ids, comma-separated (person,car or 1,3)",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="Triton server [grpc|grpcs|http|https://]host:port; repeat it or separate with commas "
        f"for failover (default 127.0.0.1:{DEFAULT_PORTS['grpc']} for gRPC, "
        f"127.0.0.1:{DEFAULT_PORTS['http']} for HTTP)",
    )
    server.add_argument("--protocol", choices=("grpc", "http"), help="default: the URL's scheme's, else grpc")
    server.add_argument("--ca-cert", metavar="PEM", help="CA bundle to verify the server's TLS certificate")
    server.add_argument("--client-cert", metavar="PEM", help="client certificate for mutual TLS")
    server.add_argument("--client-key", metavar="PEM", help="the client certificate's private key")
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
        help="per request, and per download from start to end (default: %(default)s)",
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
        type=_bounded_int(1, contract.MAX_BATCH_SIZE),
        default=DEFAULT_BATCH_SIZE,
        help=f"images per request, 1..{contract.MAX_BATCH_SIZE} (default: %(default)s)",
    )
    work.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and failovers")
    return parser


def _version() -> str:
    try:
        return metadata.version("ssd300-triton")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def _probability(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _bounded_int(low: int, high: int | None = None) -> Any:
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {low}..{high}, got {text}" if high is not None else f"must be >= {low}, got {text}"
            )
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


_positive_int = _bounded_int(1)
_non_negative_int = _bounded_int(0)


def _classes(text: str) -> frozenset[int]:
    try:
        return parse_classes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def request_parameters(args: argparse.Namespace) -> dict[str, float | int] | None:
    """The postprocess overrides the options ask for (contract.py names them)."""
    chosen = {
        contract.SCORE_THRESHOLD_PARAMETER: args.min_score,
        contract.NMS_IOU_PARAMETER: args.iou,
        contract.MAX_DETECTIONS_PARAMETER: args.max_det,
    }
    return {name: value for name, value in chosen.items() if value is not None} or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if (args.client_cert is None) != (args.client_key is None):
            parser.error("--client-cert and --client-key go together")
        tls = _tls(args)
    except SystemExit as exc:  # --help/--version (0) or a usage error (2): return the code, as promised
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE_OR_SERVER
    except ValueError as exc:  # a certificate file that is not there
        return _fail(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the detector logs it as a warning already
        return _detect(args, tls)


_TLS_FIELD = re.compile(r"\b(ca_cert|client_cert|client_key)\b")


def _tls(args: argparse.Namespace) -> TLS | None:
    if not (args.ca_cert or args.client_cert):
        return None
    try:
        return TLS(ca_cert=args.ca_cert, client_cert=args.client_cert, client_key=args.client_key)
    except ValueError as exc:  # TLS names its fields; a CLI user typed options
        raise ValueError(_TLS_FIELD.sub(lambda m: "--" + m.group(0).replace("_", "-"), str(exc))) from None


def _protocol(args: argparse.Namespace, urls: list[str]) -> str:
    if args.protocol:
        return args.protocol
    named = {scheme_protocol(url) for url in urls} - {None}
    if len(named) > 1:
        raise ValueError("the URLs name both gRPC and HTTP: pick one with --protocol")
    return str(named.pop()) if named else "grpc"


def _detect(args: argparse.Namespace, tls: TLS | None) -> int:
    try:
        given = split_urls(args.url) if args.url else []
        protocol = _protocol(args, given)
        urls = given or [f"127.0.0.1:{DEFAULT_PORTS[protocol]}"]
    except ValueError as exc:
        return _fail(str(exc))
    inputs = collect_inputs(args.inputs, recursive=args.recursive)
    for spec in inputs.missing:
        print(f"skipped {spec}: no such file, folder or matching files", file=sys.stderr)
    if not inputs.images and not inputs.videos:
        return _fail("no images or videos found in " + ", ".join(args.inputs))
    try:  # before any request: a path that cannot be written is a usage error
        for option, folder in (("--out", args.out), ("--save-txt", args.save_txt)):
            if folder:
                prepare_folder(option, folder)
        if args.json:
            prepare_file("--json", args.json)
    except OutputError as exc:
        return _fail(str(exc))
    modes: dict[str, str | bool] = {"auto": "auto", "on": True, "off": False}
    try:
        detector = Detector(
            urls,
            protocol=protocol,
            timeout_s=args.timeout,
            retries=args.retries,
            server_side_decode=args.server_side_decode,
            shared_memory=modes[args.shared_memory],
            parameters=request_parameters(args),
            tls=tls,
        )
    except ValueError as exc:  # a malformed address
        return _fail(str(exc))
    with detector, logging_redirect_tqdm(), tempfile.TemporaryDirectory(prefix="ssd300-detect-") as scratch:
        try:
            detector.check_ready()
            run = Run(detector, args, failed=len(inputs.missing))
            images = run.fetch(inputs.images, Path(scratch))
            if images:
                run.images(images)
            for video in inputs.videos:
                run.video(video)
            return EXIT_OK if run.finish() else EXIT_FAILED
        except (ServerUnavailableError, ModelNotReadyError) as exc:
            return _fail(str(exc))
        except (SSD300Error, OutputError) as exc:  # mid-run: what was written so far stays
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE_OR_SERVER


if __name__ == "__main__":
    sys.exit(main())
