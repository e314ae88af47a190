"""The weights' provenance as parameters of the ``ssd300`` model config (standard library only).

The model build writes ``ssd300/1/weights.json`` beside ``model.pt``; the server reports its
``weights`` ("random", "nvidia" or "file") and ``weights_sha256`` as config parameters, which
the client reads to warn about random weights. The embedded server stamps its own copy of the
config at start; serving images stamp ``config.pbtxt`` once, when they are built.
"""

from __future__ import annotations

# Config parameter ← weights.json key. tests/test_client_contract.py checks that the first is
# the parameter the client reads (ssd300_client.contract.WEIGHTS_PARAMETER).
STAMPED_PARAMETERS = (("weights", "weights"), ("weights_sha256", "sha256"))


def stamp_weights(config_text: str, metadata: dict | None) -> str:
    """``config_text`` with the model.pt provenance appended as config parameters."""
    if not metadata:
        return config_text
    lines = [config_text.rstrip(), "# stamped from 1/weights.json"]
    for parameter, key in STAMPED_PARAMETERS:
        value = metadata.get(key)
        if value:
            lines.append(f'parameters {{ key: "{parameter}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"
