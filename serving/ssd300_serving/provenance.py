"""The build's provenance as parameters of the ``ssd300`` model config (no dependency beyond
ssd300_common's contract).

The model build writes ``ssd300/1/weights.json`` beside ``model.pt``; the server reports its
``weights`` ("random", "nvidia" or "file"), ``weights_sha256``, ``precision`` (of model.pt's
network: "fp32" or "fp16") and ``engine`` ("torchscript" or "onnx") as config parameters. The
client reads ``weights`` to warn about random weights; the CPU runner (ssd300/1/model.py) reads
``engine`` to pick model.pt or model.onnx. The embedded server stamps its own copy of the config
at start; serving images stamp ``config.pbtxt`` once, when they are built.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssd300_common.contract import METADATA_FILE, NETWORK_MODEL, WEIGHTS_PARAMETER

__all__ = ["STAMPED_PARAMETERS", "read_provenance", "stamp_weights"]

# Config parameter ← weights.json key; the first is the parameter the client reads.
STAMPED_PARAMETERS = (
    (WEIGHTS_PARAMETER, "weights"),
    ("weights_sha256", "sha256"),
    ("precision", "precision"),
    ("engine", "engine"),
)


def read_provenance(repository: Path) -> dict | None:
    """The built model's weights.json, or None when no model has been built."""
    path = Path(repository) / NETWORK_MODEL / "1" / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def stamp_weights(config_text: str, metadata: dict | None, *, only: tuple[str, ...] | None = None) -> str:
    """``config_text`` with the build's provenance appended as config parameters (``only``
    those parameters, when given)."""
    if not metadata:
        return config_text
    lines = [config_text.rstrip(), "# stamped from 1/weights.json"]
    for parameter, key in STAMPED_PARAMETERS:
        value = metadata.get(key)
        if value and (only is None or parameter in only):
            lines.append(f'parameters {{ key: "{parameter}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"
