"""A health check that catches what Triton's readiness endpoints miss (standard library only).

In tritonserver 2.51 a crashed Python-backend stub leaves `/v2/health/ready` and every
`/v2/models/<name>/ready` at 200 while each inference fails with "Stub process … is not
healthy" until the model is reloaded. So this check sends one tiny PNG through `ssd300_image`,
whose steps cover every Python model of the repository (preprocess, the CPU runner of ssd300,
postprocess, rescale), and passes only if detections come back.

An overloaded server (queue full, queue timeout: HTTP 503) counts as healthy: it works, it is
busy, and restarting it would only make the overload worse.

    python -m ssd300_serving.health --url 127.0.0.1:8000      # exit 0 healthy, 1 not
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import urllib.error
import urllib.request
import zlib

# The image runs this file with the standard library alone, so it cannot import the client's
# contract; tests/test_client_contract.py checks that these names are the contract's.
CANARY_MODEL = "ssd300_image"
CANARY_INPUT = "encoded_image"
CANARY_DATATYPE = "BYTES"
CANARY_OUTPUT = "num_detections"
BUSY_STATUS = 503


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A mid-grey 8-bit greyscale PNG, written by hand so no imaging library is needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def canary_request(image: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a binary-tensor inference request with one BYTES element."""
    element = struct.pack("<I", len(image)) + image
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": CANARY_INPUT,
                    "shape": [1, 1],
                    "datatype": CANARY_DATATYPE,
                    "parameters": {"binary_data_size": len(element)},
                }
            ],
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + element, headers


def check(url: str, *, timeout_s: float = 10.0) -> tuple[bool, str]:
    """(healthy, reason) for the server at ``host:port`` (HTTP)."""
    body, headers = canary_request(tiny_png())
    request = urllib.request.Request(
        f"http://{url}/v2/models/{CANARY_MODEL}/infer", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace")[:300]
        if error.code == BUSY_STATUS:
            return True, f"busy ({message})"
        return False, f"HTTP {error.code}: {message}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"no answer from {url}: {getattr(error, 'reason', error)}"
    outputs = {output["name"]: output for output in reply.get("outputs", [])}
    if CANARY_OUTPUT not in outputs:
        return False, f"unexpected reply: {str(reply)[:300]}"
    return True, "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd300_serving.health", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", default="127.0.0.1:8000", help="HTTP host:port (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    healthy, reason = check(args.url, timeout_s=args.timeout)
    print(f"{'healthy' if healthy else 'UNHEALTHY'}: {reason}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
