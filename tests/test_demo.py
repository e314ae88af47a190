"""`make demo` (``python -m tools.demo``), the README's first command: it serves a built repository
on free ports, runs the CLI over the sample photos and writes annotated images and COCO results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssd300_common import samples

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.server
def test_the_demo_detects_objects_in_every_sample_photo(built_repository, tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "tools.demo", "--repository", str(built_repository), "--out", str(out)]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads((out / "detections.json").read_text())
    photos = sorted(path.name for path in samples.paths())
    assert sorted(Path(image["file_name"]).name for image in document["images"]) == photos
    assert {a["image_id"] for a in document["annotations"]} == {image["id"] for image in document["images"]}
    assert len([path for path in out.iterdir() if path.suffix == ".jpg"]) == len(photos)
