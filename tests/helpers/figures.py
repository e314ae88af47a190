"""What the reliability suites measure, collected over the session and written as JSON for the
reliability report (``make reliability`` asks for it; otherwise it goes to a temporary folder)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
from pathlib import Path

from .triton_calls import server_version

REPO = Path(__file__).resolve().parents[2]


class Figures:
    """Thread-safe: the overload and failover tests record from callbacks and worker threads."""

    def __init__(self) -> None:
        self.data: dict = {"meta": {}, "bad_input": {"cases": []}, "notes": []}
        self._lock = threading.Lock()

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
        with self._lock:
            self.data["bad_input"]["cases"].append(
                {
                    "kind": kind,
                    "side": side,
                    "via": via,
                    "answer": answer,
                    "message": message,
                    "healthy_after": healthy_after,
                    "non_finite": non_finite,
                }
            )

    def section(self, name: str, **values) -> None:
        with self._lock:
            self.data.setdefault(name, {}).update(values)

    def restriction(self, api: str, answers: list[str]) -> None:
        with self._lock:
            self.data.setdefault("security", {}).setdefault("restricted", {})[api] = answers

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.data["notes"]:
                self.data["notes"].append(text)

    def server_version(self, http_url: str) -> None:
        if "tritonserver" not in self.data["meta"]:
            version = server_version(http_url)
            if version:
                self.data["meta"]["tritonserver"] = version

    def write(self, path: Path) -> None:
        self.data["meta"].update(
            recorded_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            commit=_commit(),
            cpus=os.cpu_count(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2) + "\n")


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
