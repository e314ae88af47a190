"""The CPU profile's batching and instance settings of ``ssd300``, chosen by measurement.

On a CPU a larger batch is not cheaper per image (a forward pass of 8 images costs more per
image than one of 4: the activations outgrow the caches), so settings that let the dynamic
batcher form large batches make the server slower as clients are added. Each candidate below is
served in turn (a copy of the repository whose ``ssd300/configs/cpu.pbtxt`` carries it) and
measured at a few concurrencies; the rule it must meet: throughput at 8 and at 16 clients at
least ``RULE_SHARE`` of the best throughput at any concurrency.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from load_tests.benchmark import triton_stats
from load_tests.benchmark.formatting import fmt, percent
from load_tests.perf.analyzer import Runner
from ssd300_serving.embedded_server import EmbeddedServer

log = logging.getLogger(__name__)

RULE_SHARE = 0.95
RULE_CONCURRENCIES = (8, 16)
NETWORK_CPU_CONFIG = Path("ssd300") / "configs" / "cpu.pbtxt"


@dataclass(frozen=True)
class Candidate:
    instances: int
    threads: int  # torch intra-op threads per instance; 0 = every core
    preferred: tuple[int, ...]  # the dynamic batcher's preferred batch sizes
    chunk: int = 0  # the runner's max_forward_batch: forward passes of at most this many images

    @property
    def name(self) -> str:
        threads = "all cores" if self.threads == 0 else f"{self.threads} thread(s)"
        preferred = ", ".join(map(str, self.preferred))
        chunk = f", forward ≤ {self.chunk}" if self.chunk else ""
        return f"{self.instances} instance(s) × {threads}, preferred batch [{preferred}]{chunk}"


CANDIDATES = (
    Candidate(instances=1, threads=0, preferred=(8,)),  # the setting before this sweep
    Candidate(instances=1, threads=0, preferred=(4,)),
    Candidate(instances=1, threads=0, preferred=(4,), chunk=4),
    Candidate(instances=1, threads=0, preferred=(4,), chunk=1),
    Candidate(instances=1, threads=0, preferred=(2,), chunk=2),
    Candidate(instances=2, threads=1, preferred=(2,), chunk=2),
)


def settings_of(config: model_config_pb2.ModelConfig) -> Candidate:
    def parameter(key: str) -> int:
        return int(config.parameters[key].string_value) if key in config.parameters else 0

    return Candidate(
        instances=sum(group.count or 1 for group in config.instance_group),
        threads=parameter("intra_op_threads"),
        preferred=tuple(config.dynamic_batching.preferred_batch_size),
        chunk=parameter("max_forward_batch"),
    )


def served_settings(repository: Path) -> Candidate:
    config = text_format.Parse((repository / NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig())
    return settings_of(config)


def with_settings(repository: Path, workdir: Path, candidate: Candidate) -> Path:
    """A view of ``repository`` (links) whose ssd300 CPU config carries ``candidate``."""
    view = workdir / "model_repository"
    view.mkdir(parents=True)
    for item in repository.iterdir():
        if item.name != "ssd300":
            (view / item.name).symlink_to(item.resolve())
    network = view / "ssd300"
    (network / "configs").mkdir(parents=True)
    for item in (repository / "ssd300").iterdir():
        if item.name != "configs":
            (network / item.name).symlink_to(item.resolve())
    config = text_format.Parse((repository / NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig())
    del config.instance_group[1:]
    config.instance_group[0].count = candidate.instances
    config.parameters["intra_op_threads"].string_value = str(candidate.threads)
    config.dynamic_batching.preferred_batch_size[:] = candidate.preferred
    config.parameters["max_forward_batch"].string_value = str(candidate.chunk)
    (view / NETWORK_CPU_CONFIG).write_text(text_format.MessageToString(config))
    return view


def measure(
    repository: Path,
    candidate: Candidate,
    *,
    runner: Runner,
    samples,
    concurrencies: list[int],
    quiet,
    log_path: Path,
) -> dict:
    """Serve ``candidate`` and run one perf_analyzer gRPC point per concurrency."""
    with tempfile.TemporaryDirectory(prefix="ssd300-sweep-") as workdir:
        view = with_settings(repository, Path(workdir), candidate)
        server = EmbeddedServer.on_free_ports(view, log_path=log_path)
        with server:
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                served = client.get_model_config("ssd300", as_json=True)["config"]
            triton_stats.warm_up(server.grpc_url, samples, max_batch=max((*candidate.preferred, 1)))
            points = []
            for concurrency in concurrencies:
                quiet.wait()
                point = runner.point(server, "grpc", concurrency)
                log.info(
                    "sweep %s c=%d  %s img/s  p95 %s ms  batch %.2f  other processes' CPU %s%s",
                    candidate.name,
                    concurrency,
                    fmt(point.images_per_s),
                    fmt((point.latency_ms or {}).get("p95"), 0),
                    (point.network or {}).get("average_batch", 0.0),
                    percent(point.foreign_cpu_share),
                    f"  ERROR {point.error}" if point.error else "",
                )
                points.append(point)
    return {
        "candidate": asdict(candidate),
        "name": candidate.name,
        "instance_groups": served.get("instance_group", []),
        "points": points,
    }


def _batch(point) -> float | None:
    return (point.network or {}).get("average_batch")


def rule(points) -> tuple[float, dict[int, float], bool]:
    """(best img/s, {concurrency: share of the best} for the rule's concurrencies, rule met)."""
    best = max(p.images_per_s or 0.0 for p in points)
    shares = {
        p.concurrency: (p.images_per_s or 0.0) / best if best else 0.0
        for p in points
        if p.concurrency in RULE_CONCURRENCIES
    }
    met = len(shares) == len(RULE_CONCURRENCIES) and all(share >= RULE_SHARE for share in shares.values())
    return best, shares, met


def target_rows(results: dict) -> list[tuple[str, str, str, bool, str]]:
    """The rule on the main run's gRPC points (the served CPU config)."""
    points = sorted((p for p in results["triton"] if p.scenario == "grpc"), key=lambda p: p.concurrency)
    if not points or not {p.concurrency for p in points} >= set(RULE_CONCURRENCIES):
        return []
    best, shares, met = rule(points)
    top = max(points, key=lambda p: p.images_per_s or 0.0)
    measured = ", ".join(f"c={c}: {share:.2f}×" for c, share in shares.items())
    why = f"best {best:.2f} img/s at c={top.concurrency}; " + "; ".join(
        f"c={p.concurrency}: {fmt(p.images_per_s)} img/s, ssd300 batches of {fmt(_batch(p), 1)}, "
        f"other processes {percent(p.foreign_cpu_share)} of the CPU"
        for p in points
        if p.concurrency in RULE_CONCURRENCIES
    )
    return [
        (
            "gRPC throughput at c=8 and c=16 vs the best at any concurrency",
            f"≥ {RULE_SHARE:.2f}×",
            f"{measured} (best {best:.2f} img/s at c={top.concurrency})",
            met,
            why,
        )
    ]


def markdown(results: dict) -> list[str]:
    sweep = results.get("cpu_sweep")
    if not sweep:
        return []
    concurrencies = sorted({p.concurrency for entry in sweep["entries"] for p in entry["points"]})
    lines = [
        "## CPU batching and instance settings (sweep)",
        "",
        "Each candidate setting of `ssd300`'s CPU config (`model_repository/ssd300/configs/cpu.pbtxt`) "
        "served in turn and measured by perf_analyzer over gRPC, one image per request, as the main "
        "run's points are. Rule: throughput at "
        f"c={' and c='.join(map(str, RULE_CONCURRENCIES))} ≥ {RULE_SHARE:.2f}× the best at any concurrency. "
        "Cells: images/s (p95 ms, average executed batch, other processes' CPU share).",
        "",
        "| setting | " + " | ".join(f"c={c}" for c in concurrencies) + " | c=8, c=16 vs best | rule |",
        "|---|" + "---|" * (len(concurrencies) + 2),
    ]
    for entry in sweep["entries"]:
        cells = {
            p.concurrency: (
                f"{fmt(p.images_per_s)} ({fmt((p.latency_ms or {}).get('p95'), 0)} ms, {fmt(_batch(p), 1)}, "
                f"{percent(p.foreign_cpu_share)})"
            )
            for p in entry["points"]
        }
        _, shares, met = rule(entry["points"])
        served = " **(served)**" if entry["name"] == sweep["served"] else ""
        lines.append(
            f"| {entry['name']}{served} | "
            + " | ".join(cells.get(c, "") for c in concurrencies)
            + f" | {', '.join(f'{s:.2f}×' for s in shares.values())} | {'yes' if met else '**no**'} |"
        )
    lines += [
        "",
        "The machine is shared: other processes' CPU share is recorded per point, and a candidate "
        "measured while others took a large share reads slower than it is.",
        "",
    ]
    return lines
