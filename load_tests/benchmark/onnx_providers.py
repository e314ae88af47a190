"""model.onnx through ONNX Runtime's GPU providers, for ``make gpu-check``: each row labelled by
the provider the session really got (``session.get_providers()``), since ONNX Runtime falls back
to CUDA or the CPU, with only a warning, when a provider cannot start."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

from load_tests.benchmark.gpu_models import photos
from ssd300_serving.provenance import ENGINE_FILES

log = logging.getLogger("load_tests.benchmark.gpu_check")
ONNX_FALLBACKS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def provider_chain(provider: str, options: dict) -> list:
    """The providers a session is created with: ``provider`` first, then the fallbacks once each."""
    return [(provider, options), *(p for p in ONNX_FALLBACKS if p != provider)]


def session_providers(requested: str, session) -> dict:
    """What an ONNX Runtime session runs on, against what it was asked for: a provider that
    failed to start is absent from ``get_providers()``, so the first entry takes the graph."""
    providers = list(session.get_providers())
    active = providers[0] if providers else "none"
    fell_back = active != requested
    label = f"{active} ({requested} requested: ONNX Runtime fell back)" if fell_back else active
    return {
        "requested": requested,
        "provider": active,
        "session_providers": providers,
        "fell_back": fell_back,
        "label": label,
    }


def onnx_runtime(repository: Path, device, args) -> dict:
    """Images/s of model.onnx at the largest batch size with each GPU provider ONNX Runtime has."""
    try:
        import onnxruntime
    except ImportError:
        return {"available": [], "note": "onnxruntime is not installed"}
    available = onnxruntime.get_available_providers()
    result: dict = {"available": available, "providers": []}
    path = repository / "ssd300" / "1" / ENGINE_FILES["onnx"]
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not path.is_file():
        result["note"] = f"{path} is missing: build it with `make model ENGINE=onnx`"
    elif not wanted:
        result["note"] = "no CUDA or TensorRT execution provider in this onnxruntime (see onnxruntime-gpu)"
    elif device.type != "cuda":
        result["note"] = "not run: --device is not CUDA"
    if "note" in result:
        return result
    size = max(args.batch_sizes)
    images = photos(size).numpy()
    for provider in wanted:
        options = {"trt_fp16_enable": True} if provider == "TensorrtExecutionProvider" else {}
        session = onnxruntime.InferenceSession(str(path), providers=provider_chain(provider, options))
        providers = session_providers(provider, session)
        if providers["fell_back"]:
            log.warning("ONNX Runtime: %s", providers["label"])
        # session.run returns when the outputs are on the host: wall-clock times suffice.
        times = []
        for _ in range(args.repeats + 1):  # the first call builds TensorRT's engine
            start = time.perf_counter()
            session.run(None, {"images": images})
            times.append(time.perf_counter() - start)
        first_s, seconds = times[0], statistics.median(times[1:])
        result["providers"].append(
            {**providers, "batch_size": size, "images_per_s": size / seconds, "first_call_s": first_s}
        )
    return result


def onnx_markdown(onnx: dict) -> list[str]:
    """The ONNX Runtime rows of the report's table, and the notes under it."""
    rows, notes = [], []
    for row in onnx.get("providers", []):
        rows.append(
            f"| ONNX Runtime img/s | {row['label']} (first call {row['first_call_s']:.1f} s) | "
            f"{row['batch_size']} | {row['images_per_s']:.1f} |"
        )
        notes.append(
            f"ONNX Runtime, {row['requested']} requested: the session's providers were "
            f"{' > '.join(row['session_providers']) or 'none'}."
        )
    if onnx.get("note"):
        notes.append(
            f"ONNX Runtime: {onnx['note']} (providers here: {', '.join(onnx['available']) or 'none'})."
        )
    return rows + ([""] if notes else []) + notes
