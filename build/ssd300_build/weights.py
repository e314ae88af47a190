"""Reading SSD300 checkpoints: NVIDIA's NGC file, training checkpoints and bare state dicts.

Every failure becomes a :class:`CheckpointError` whose message names the file and what is wrong;
nothing here unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

NGC_CHECKPOINT_URL = (
    "https://api.ngc.nvidia.com/v2/models/nvidia/ssd_pyt_ckpt_amp/versions/20.06.0/files/"
    "nvidia_ssdpyt_amp_200703.pt"
)
NGC_CHECKPOINT_NAME = "nvidia_ssdpyt_amp_200703.pt"
DOWNLOAD_TIMEOUT_S = 30.0
# Training checkpoints carry a MultiStepLR state whose milestones are a Counter: the one
# non-container global they need. Anything else is refused.
SAFE_GLOBALS = [collections.Counter]


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit SSD300."""


class CheckpointUnavailable(CheckpointError):
    """The NVIDIA checkpoint is neither cached nor downloadable."""


def hub_checkpoint_path() -> Path:
    """Where torch.hub keeps the NVIDIA checkpoint (shared with ``torch.hub.load('…', 'nvidia_ssd')``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / NGC_CHECKPOINT_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_nvidia_checkpoint(*, timeout_s: float = DOWNLOAD_TIMEOUT_S, progress: bool = True) -> Path:
    """Return the cached NGC checkpoint, downloading it (with a progress bar) if absent."""
    target = hub_checkpoint_path()
    if target.is_file():
        log.info("using cached NVIDIA checkpoint %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    log.info("downloading %s -> %s", NGC_CHECKPOINT_URL, target)
    try:
        with (
            urllib.request.urlopen(NGC_CHECKPOINT_URL, timeout=timeout_s) as response,
            open(partial, "wb") as out,
        ):
            _copy_with_progress(response, out, int(response.headers.get("Content-Length") or 0), progress)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CheckpointUnavailable(
            f"cannot download the NVIDIA checkpoint ({reason}). Copy {NGC_CHECKPOINT_NAME} from "
            f"{NGC_CHECKPOINT_URL} to {target}, or build with WEIGHTS=<path to a checkpoint> "
            "(WEIGHTS=random gives an untrained model for smoke tests)."
        ) from exc
    partial.replace(target)
    return target


def _copy_with_progress(source, out, total: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(
        total=total or None, unit="B", unit_scale=True, desc=NGC_CHECKPOINT_NAME, disable=not progress
    ) as bar:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))


def read_state_dict(path: str | Path, *, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a float32 state dict with DDP ``module.`` prefixes removed.

    Accepts NGC/training checkpoints (``{"model": state_dict, …}``), ``{"state_dict": …}`` and
    bare state dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if expected_sha256 and sha256_of(path) != expected_sha256.lower():
        raise CheckpointError(f"{path}: sha256 is {sha256_of(path)}, expected {expected_sha256}")
    raw = _torch_load(path)
    state = _find_state_dict(raw, path)
    cleaned = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        cleaned[key] = value.float() if value.is_floating_point() else value
    return cleaned


def _torch_load(path: Path):
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for bad bytes (KeyError, EOFError, …)
        text = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise CheckpointError(
                f"{path}: refused: it pickles a {refused.group(1)} object, and only tensors and plain "
                "containers are loaded from checkpoints (weights_only)"
            ) from exc
        unpickler = re.search(r"WeightsUnpickler error: (.*)", text)
        detail = unpickler.group(1) if unpickler else (text.strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {detail}"
        ) from exc


def _find_state_dict(raw, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict):
        for key in ("model", "state_dict"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: no SSD300 state dict found: "
            f"entries {sorted(map(str, not_tensors))[:5]} are not tensors "
            "(expected a state dict or a checkpoint with a 'model' entry)"
        )
    return raw


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load strictly, first describing every missing, unexpected and misshaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{key} is {list(state[key].shape)}, SSD300 needs {list(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if misshaped:
        problems.append(f"{len(misshaped)} wrong shape(s): {'; '.join(misshaped[:3])}")
    if problems:
        raise CheckpointError(f"{source}: does not fit SSD300: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
