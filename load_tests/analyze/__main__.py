"""``python -m load_tests.analyze`` (``make analyze``): Triton's Model Analyzer profiles the configs.

Model Analyzer 1.44.0 (1.45.0, tritonserver 2.51's release, is the same code and not on PyPI)
in a venv of its own under ``.tools/``; its local launch mode starts a generated script that runs
the tritonserver bundled in nvidia-pytriton as ``ssd300_serving.embedded_server`` does, on a view
of the repository whose ``config.pbtxt`` files are the CPU variants. Reports go to
``reports/analyze/``; docs/model-analyzer.md says how to read them and how to run it on a GPU.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from load_tests.external_tools import install_model_analyzer, install_perf_analyzer
from load_tests.payloads import SampleImages
from load_tests.perf.inputs import write_input_data
from ssd300_common.contract import NETWORK_MODEL
from ssd300_serving import embedded_server
from ssd300_serving.provenance import read_provenance, stamp_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = Path(__file__).with_name("cpu.yaml")
LAUNCHER = """#!/bin/sh
# tritonserver for Model Analyzer's local launch mode: the binary bundled in nvidia-pytriton
# with the backends, libraries and flags ssd300_serving.embedded_server gives it.
export LD_LIBRARY_PATH={LD_LIBRARY_PATH} PATH={PATH}
exec {server} "$@"
"""


def cpu_repository(repository: Path, into: Path) -> Path:
    """A view of ``repository`` whose ``config.pbtxt`` files are the CPU variants (ssd300's
    stamped with the build's provenance: its runner reads the engine there)."""
    shutil.rmtree(into, ignore_errors=True)
    provenance = read_provenance(repository)
    for model in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        (into / model.name).mkdir(parents=True)
        for item in model.iterdir():
            if item.name not in ("config.pbtxt", "configs"):
                (into / model.name / item.name).symlink_to(item.resolve())
        cpu = model / "configs" / "cpu.pbtxt"
        text = (cpu if cpu.is_file() else model / "config.pbtxt").read_text()
        (into / model.name / "config.pbtxt").write_text(
            stamp_weights(text, provenance) if model.name == NETWORK_MODEL else text
        )
    return into


def write_launcher(repository: Path, into: Path) -> Path:
    """``into/tritonserver``: the bundled server, its Python stub and libraries (``into`` is
    rebuilt), on loopback, with the embedded server's Python-backend shared-memory sizes."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    binary, backends = embedded_server.runtime_tree(into)
    env = embedded_server.EmbeddedServer(repository).environment()
    flags = [
        *(f"--{kind}-address=127.0.0.1" for kind in ("http", "grpc", "metrics")),
        f"--backend-config=python,shm-default-byte-size={embedded_server.PYTHON_SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={embedded_server.PYTHON_SHM_GROWTH_BYTES}",
    ]
    launcher = into / "tritonserver"
    paths = {name: shlex.quote(env[name]) for name in ("LD_LIBRARY_PATH", "PATH")}
    launcher.write_text(
        LAUNCHER.format(**paths, server=shlex.join([str(binary), f"--backend-directory={backends}", *flags]))
    )
    launcher.chmod(0o755)
    return launcher


def profile_command(config: Path, repository: Path, reports: Path) -> list[str]:
    """Prepares ``reports/work`` (inputs, repository view, launcher) and returns the command."""
    work = reports / "work"
    write_input_data(SampleImages(), work / "inputs")
    # A checkpoint left by an earlier run would be resumed, its measurements reused as they were
    # (another build, another config); `model-analyzer report` reads the one this run leaves.
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    http, grpc, metrics = (embedded_server.free_port() for _ in range(3))
    return [
        str(install_model_analyzer()),
        "profile",
        f"--config-file={config.resolve()}",
        f"--model-repository={cpu_repository(repository.resolve(), work / 'model_repository')}",
        f"--triton-server-path={write_launcher(repository.resolve(), work / 'runtime')}",
        f"--perf-analyzer-path={install_perf_analyzer()}",
        f"--triton-http-endpoint=localhost:{http}",
        f"--triton-grpc-endpoint=localhost:{grpc}",
        f"--triton-metrics-url=http://localhost:{metrics}/metrics",
        f"--triton-output-path={work / 'tritonserver.log'}",
        f"--output-model-repository-path={work / 'output_model_repository'}",
        "--override-output-model-repository",
        f"--checkpoint-directory={work / 'checkpoints'}",
        f"--export-path={reports}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.analyze", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, default=CPU_CONFIG, help="its YAML (default: cpu.yaml)")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports" / "analyze")
    args, extra = parser.parse_known_args(argv)
    reports = args.reports.resolve()
    command = [*profile_command(args.config, args.repository, reports), *extra]
    print(shlex.join(command), flush=True)
    # The configs name their input data relative to the folder Model Analyzer runs in.
    return subprocess.run(command, cwd=reports / "work").returncode


if __name__ == "__main__":
    sys.exit(main())
