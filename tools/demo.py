"""``make demo``: serve the built model on free ports, detect objects in the sample photos with
the ``ssd300-detect`` CLI, and stop the server."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ssd300_client import cli
from ssd300_common import samples
from ssd300_serving.embedded_server import EmbeddedServer, ServerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--images", type=Path, default=samples.folder(), help="default: the sample photos")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="annotated images and JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "tritonserver.log"
    print(f"starting tritonserver (log: {log}) ...", flush=True)
    # Free ports: the demo must not collide with a server someone already runs on 8000-8002.
    try:
        with EmbeddedServer.on_free_ports(args.repository, log_path=log) as server:
            print(f"serving on gRPC {server.grpc_url}; running ssd300-detect on {args.images}/\n", flush=True)
            options = ["--out", str(args.out), "--json", str(args.out / "detections.json")]
            code = cli.main(
                [str(args.images), "--url", server.grpc_url, *options, "--print", "--max-print", "10"]
            )
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nannotated images and detections.json are in {args.out}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
