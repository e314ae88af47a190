"""One ``ssd300-detect`` run: inputs through the detector, outputs written, tallies kept
(the options are :mod:`ssd300_client.cli`'s)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from ssd300_common import contract

from .cli_inputs import DownloadError, download, is_url, stem, suffix
from .cli_outputs import (
    OutputError,
    OutputNames,
    coco_document,
    output_suffix,
    save_image,
    writing,
    yolo_lines,
)
from .detector import Detector
from .drawing import RANDOM_WEIGHTS_BANNER, draw_banner
from .results import DEFAULT_DISPLAY_THRESHOLD, Detections
from .video import VideoError, VideoReader, VideoWriter


def coco_image_ids(names: Sequence[str | Path]) -> list[int]:
    """COCO-style numeric file names give their number; otherwise 1, 2, 3, … in order."""
    stems = [stem(name) for name in names]
    if stems and all(item.isdigit() for item in stems):
        numbers = [int(item) for item in stems]
        if len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(names) + 1))


def format_detections(detections: Detections, *, limit: int | None = None, name: str | None = None) -> str:
    """One line per detection (highest confidence first), at most ``limit`` of them."""
    count = len(detections)
    lines = [f"{name or detections.name}: {count} object{'s' if count != 1 else ''}"]
    for number, d in enumerate(detections):
        if limit is not None and number == limit:
            lines.append(f"  … and {count - limit} more")
            break
        box = ", ".join(f"{v:.1f}" for v in d.xyxy)
        lines.append(f"  {d.class_name:<16} {d.confidence:.3f}  [{box}]")
    return "\n".join(lines)


class Run:
    """One invocation's outputs and tallies."""

    def __init__(self, detector: Detector, args: argparse.Namespace, *, failed: int) -> None:
        self.detector, self.args, self.failed = detector, args, failed
        self.display_threshold = DEFAULT_DISPLAY_THRESHOLD if args.threshold is None else args.threshold
        self.print_detections = args.print_detections or not (args.out or args.json or args.save_txt)
        self.out_names = OutputNames(args.out) if args.out else None
        self.txt_names = OutputNames(args.save_txt) if args.save_txt else None
        self.done = self.frames = self.shown = 0
        self.start = time.perf_counter()

    @property
    def banner(self) -> bool:
        return self.detector.server_weights == contract.RANDOM_WEIGHTS

    def _skip(self, message: str, progress: Any = None) -> None:
        self.failed += 1
        (progress.write if progress is not None else print)(f"skipped {message}", file=sys.stderr)

    def _kept(self, detections: Detections) -> tuple[Detections, Detections]:
        """(what machine outputs keep, what is drawn and printed)."""
        selected = detections.filter(classes=self.args.classes) if self.args.classes else detections
        kept = selected if self.args.threshold is None else selected.filter(self.args.threshold)
        return kept, selected.filter(self.display_threshold)

    def _draw(self, detections: Detections, image: Any) -> Any:
        picture = detections.draw(image, threshold=self.display_threshold)
        return draw_banner(picture, RANDOM_WEIGHTS_BANNER) if self.banner else picture

    # ----- images -----

    def fetch(self, specs: list[str | Path], scratch: Path) -> list[tuple[str, Path]]:
        """(name as given, local file) per image; URLs downloaded into ``scratch``."""
        images = []
        max_bytes = int(self.args.max_download_mb * 1024 * 1024)
        for number, spec in enumerate(specs):
            if not is_url(spec):
                images.append((str(spec), Path(spec)))
                continue
            try:
                path = download(
                    str(spec), scratch, number=number, timeout_s=self.args.timeout, max_bytes=max_bytes
                )
            except DownloadError as exc:
                self._skip(str(exc))
                continue
            images.append((str(spec), path))
        return images

    def images(self, images: list[tuple[str, Path]]) -> None:
        args = self.args
        names = [name for name, _ in images]
        image_ids = coco_image_ids(names)
        coco_results: list[dict] = []
        listed: list[dict] = []
        outcomes = self.detector.detect_iter(
            [path for _, path in images], concurrency=args.concurrency, batch_size=args.batch_size
        )
        with tqdm(
            outcomes,
            total=len(images),
            unit="img",
            desc="detecting",
            file=sys.stderr,
            leave=False,
            disable=None,
        ) as progress:
            for index, outcome in progress:
                name, path = images[index]
                if not isinstance(outcome, Detections):
                    self._skip(str(outcome).replace(str(path), name), progress)
                    continue
                self.done += 1
                kept, shown = self._kept(outcome)
                self.shown += len(shown)
                height, width = outcome.image_size
                if args.json:
                    listed.append(
                        {"id": image_ids[index], "file_name": name, "width": width, "height": height}
                    )
                    coco_results.extend(kept.to_coco(image_ids[index]))
                if self.out_names:
                    target = self.out_names.stem_for(stem(name)) + output_suffix(suffix(name), args.format)
                    picture = self._draw(outcome, path)
                    with writing(self.out_names.folder / target, "--out"):
                        save_image(picture, self.out_names.folder / target)
                if self.txt_names:
                    text = self.txt_names.folder / f"{self.txt_names.stem_for(stem(name))}.txt"
                    with writing(text, "--save-txt"):
                        text.write_text(yolo_lines(kept))
                if self.print_detections:
                    progress.write(format_detections(shown, limit=args.max_print, name=name), file=sys.stdout)
        if args.json:
            with writing(args.json, "--json"):
                args.json.write_text(json.dumps(coco_document(listed, coco_results)))

    # ----- videos -----

    def video(self, path: Path) -> None:
        """Frames streamed through the detector: at most the detector's read-ahead of frames
        is held here, whatever the video's length."""
        try:
            with ExitStack() as stack:
                reader = stack.enter_context(VideoReader(path))
                writer, lines = self._video_outputs(stack, reader)
                self._video_frames(reader, writer, lines)
        except VideoError as exc:  # unreadable, or its annotated copy could not be encoded
            self._skip(str(exc))
        except OSError as exc:  # the JSON lines (a full disk, say): stops the run
            raise OutputError(f"--out: cannot write {path}'s outputs ({exc.strerror or exc})") from exc

    def _video_outputs(
        self, stack: ExitStack, reader: VideoReader
    ) -> tuple[VideoWriter | None, TextIO | None]:
        if not self.out_names:
            if not self.print_detections:
                print(
                    f"note: {reader.path}: a video's detections go to --out DIR (as JSON lines, "
                    "<name>.jsonl), not to --json or --save-txt: without --out or --print its "
                    "frames are only counted",
                    file=sys.stderr,
                )
            return None, None
        base = self.out_names.folder / self.out_names.stem_for(reader.path.stem)
        fps = reader.fps / self.args.every
        writer = stack.enter_context(
            VideoWriter(base.with_suffix(".mp4"), fps=fps, width=reader.width, height=reader.height)
        )
        return writer, stack.enter_context(open(base.with_suffix(".jsonl"), "w"))

    def _video_frames(self, reader: VideoReader, writer: VideoWriter | None, lines: TextIO | None) -> None:
        args = self.args
        pending: dict[int, Any] = {}  # sampled position → frame, until its detections arrive

        def pixels() -> Iterator[Any]:
            for position, frame in enumerate(reader.frames(every=args.every)):
                pending[position] = frame
                yield frame.pixels

        total = -(-reader.frame_count // args.every) if reader.frame_count else None
        outcomes = self.detector.detect_iter(
            pixels(), concurrency=args.concurrency, batch_size=args.batch_size
        )
        with tqdm(
            outcomes,
            total=total,
            unit="frame",
            desc=reader.path.name,
            file=sys.stderr,
            leave=False,
            disable=None,
        ) as progress:
            for position, outcome in progress:
                frame = pending.pop(position)
                if not isinstance(outcome, Detections):
                    self._skip(f"{reader.path} frame {frame.index}: {outcome}", progress)
                    continue
                self.frames += 1
                kept, shown = self._kept(outcome)
                self.shown += len(shown)
                if lines is not None:
                    record = {
                        "frame": frame.index,
                        "time_s": round(frame.time_s, 6),
                        "detections": kept.to_dict()["detections"],
                    }
                    lines.write(json.dumps(record) + "\n")
                if writer is not None:
                    writer.write(np.asarray(self._draw(outcome, frame.pixels)))
                if self.print_detections:
                    label = f"{reader.path} frame {frame.index} ({frame.time_s:.2f} s)"
                    progress.write(
                        format_detections(shown, limit=args.max_print, name=label), file=sys.stdout
                    )

    def finish(self) -> bool:
        """Print the summary; True when every input was processed."""
        elapsed_s = time.perf_counter() - self.start
        count = self.done + self.frames
        rate = count / elapsed_s if elapsed_s > 0 else 0.0
        parts = [f"{self.done} image{'s' if self.done != 1 else ''}"]
        if self.frames:
            parts.append(f"{self.frames} video frames")
        summary = (
            f"{', '.join(parts)}, {self.shown} detections >= {self.display_threshold:.2f}, "
            f"{elapsed_s:.1f} s ({rate:.1f} per s)" + (f"; {self.failed} skipped" if self.failed else "")
        )
        print(summary, file=sys.stderr)
        return not self.failed
