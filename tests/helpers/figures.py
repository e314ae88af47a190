"""What the reliability suites measure, collected over the session and written as JSON for
``python -m tools.reliability_report`` (``make reliability`` names the file; otherwise it goes to
a temporary folder). Each test records its figures as rows of text, worded where it measured
them; the bad-input cases are kept one by one and summed up in rows when the file is written."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

from .triton_calls import brief, server_version

REPO = Path(__file__).resolve().parents[2]
BAD_INPUT = "Bad input"


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def mib(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB"


def tally(answers: list[str]) -> str:
    """``"INVALID_ARGUMENT 23, HTTP 400 8"``: each answer and how often, the most frequent first."""
    return ", ".join(f"{answer} {count}" for answer, count in Counter(answers).most_common()) or "none"


class Figures:
    """Thread-safe: the overload and failover tests record from callbacks and worker threads."""

    def __init__(self) -> None:
        self.data: dict = {"meta": {}, "rows": [], "cases": [], "notes": []}
        self._lock = threading.Lock()

    def row(self, area: str, figure: str, value: object) -> None:
        with self._lock:
            self.data["rows"].append([area, figure, str(value)])

    def case(
        self,
        *,
        kind: str,
        side: str,
        via: str,
        answer: str,
        message: str = "",
        healthy_after: bool,
        non_finite: int = 0,
    ) -> None:
        """One bad input: ``side`` is "server" (sent to it directly) or "client" (through it)."""
        with self._lock:
            self.data["cases"].append(
                {
                    "kind": kind,
                    "side": side,
                    "via": via,
                    "answer": answer,
                    "message": brief(message, 110),
                    "healthy_after": healthy_after,
                    "non_finite": non_finite,
                }
            )

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.data["notes"]:
                self.data["notes"].append(text)

    def server_version(self, http_url: str) -> None:
        if "tritonserver" not in self.data["meta"]:
            version = server_version(http_url)
            if version:
                self.data["meta"]["tritonserver"] = version

    def bad_input_rows(self) -> list[list[str]]:
        cases = self.data["cases"]
        if not cases:
            return []
        sides = Counter(case["side"] for case in cases)
        refused = [case["answer"] for case in cases if case["answer"] != "served"]
        healthy = sum(bool(case["healthy_after"]) for case in cases)
        return [
            [
                BAD_INPUT,
                "kinds tried",
                f"{len({case['kind'] for case in cases})} in {len(cases)} cases ({sides['server']} sent "
                f"to the server, {sides['client']} through the client)",
            ],
            [BAD_INPUT, "refused with an error naming the problem", f"{len(refused)}: {tally(refused)}"],
            [BAD_INPUT, "odd but valid inputs served", str(len(cases) - len(refused))],
            [BAD_INPUT, "server live and canary inference ok after each", f"{healthy}/{len(cases)}"],
            [
                BAD_INPUT,
                "NaN or inf values in any response",
                str(sum(case["non_finite"] for case in cases)),
            ],
        ]

    def write(self, path: Path) -> None:
        self.data["meta"].update(
            recorded_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            commit=_commit(),
            cpus=os.cpu_count(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        written = {**self.data, "rows": [*self.bad_input_rows(), *self.data["rows"]]}
        path.write_text(json.dumps(written, indent=2) + "\n")


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
