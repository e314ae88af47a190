"""Render the figures the reliability tests record as a Markdown report.

    python -m tools.reliability_report            # reports/reliability/RELIABILITY.md, printed

``make reliability`` runs ``tests/test_reliability_*.py`` with ``SSD300_RELIABILITY_FIGURES``
set to ``reports/reliability/figures.json``, where they write what they measured; this command
only formats what is there. A figure the last run did not produce (a test deselected or failed
before recording) reads "not measured": nothing in the report is typed by hand, including the
batching settings, which are the ones the server under test loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tools.markdown_sections import update_section

FIGURES_ENV = "SSD300_RELIABILITY_FIGURES"
DEFAULT_FIGURES = Path("reports") / "reliability" / "figures.json"
REPORT_NAME = "RELIABILITY.md"
NOT_MEASURED = "not measured"
MESSAGE_CHARS = 110  # of each message in the bad-input catalogue
# tritonserver prefixes most messages with this; it says nothing about the problem.
_REQUEST_ID = re.compile(r"\[request id: [^\]]*\]\s*")

Row = tuple[str, str, str]  # (area, figure, value)


def figures_path(explicit: str | os.PathLike | None = None) -> Path:
    """Where the figures are: the argument, else $SSD300_RELIABILITY_FIGURES, else the default."""
    return Path(explicit or os.environ.get(FIGURES_ENV) or DEFAULT_FIGURES)


def _get(figures: dict, dotted: str):
    node = figures
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _value(figures: dict, dotted: str, show: Callable = str) -> str:
    value = _get(figures, dotted)
    return NOT_MEASURED if value is None else show(value)


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _mib(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _counts(counts: dict) -> str:
    return (
        ", ".join(f"{name} {number}" for name, number in sorted(counts.items(), key=lambda kv: -kv[1]))
        or "none"
    )


def _bad_input_rows(figures: dict) -> list[Row]:
    cases = _get(figures, "bad_input.cases")
    if not cases:
        return [("Bad input", "kinds tried", NOT_MEASURED)]
    server = [c for c in cases if c["side"] == "server"]
    client = [c for c in cases if c["side"] == "client"]
    refused = [c for c in cases if c["answer"] != "served"]
    served = [c for c in cases if c["answer"] == "served"]
    answers: dict[str, int] = {}
    for case in refused:
        answers[case["answer"]] = answers.get(case["answer"], 0) + 1
    healthy = sum(bool(c.get("healthy_after")) for c in cases)
    non_finite = sum(int(c.get("non_finite", 0)) for c in cases)
    return [
        (
            "Bad input",
            "kinds tried",
            f"{len({c['kind'] for c in cases})} in {len(cases)} cases "
            f"({len(server)} sent to the server, {len(client)} through the client)",
        ),
        ("Bad input", "refused with an error naming the problem", f"{len(refused)}: {_counts(answers)}"),
        ("Bad input", "odd but valid inputs served", str(len(served))),
        ("Bad input", "server live and canary inference ok after each", f"{healthy}/{len(cases)}"),
        ("Bad input", "NaN or inf values in any response", str(non_finite)),
    ]


def _overload_rows(figures: dict) -> list[Row]:
    o = _get(figures, "overload")
    if not o:
        return [("Overload", "requests sent", NOT_MEASURED)]
    lost = o["sent"] - o["succeeded"] - o["refused"] - o["other_errors"]
    samples = o.get("capacity_samples", "?")
    return [
        (
            "Overload",
            f"capacity measured (fastest of {samples} sequential 1-image requests)",
            f"{o['capacity_per_s']:.2f} images/s ({_s(o['baseline_latency_s'])} per request)",
        ),
        (
            "Overload",
            "offered load",
            f"{o['factor']:.1f}× capacity = {o['rate_per_s']:.1f} requests/s for {_s(o['duration_s'])}",
        ),
        ("Overload", "ssd300 batching, as the server loaded it", _batching(o.get("batching"))),
        ("Overload", "requests sent", str(o["sent"])),
        ("Overload", "succeeded", f"{o['succeeded']} (slowest {_s(o['slowest_success_s'])})"),
        (
            "Overload",
            "refused explicitly (UNAVAILABLE: queue full / queue timeout)",
            f"{o['refused']} (slowest refusal {_s(o['slowest_refusal_s'])})",
        ),
        ("Overload", "other errors", str(o["other_errors"])),
        ("Overload", "lost (no answer by the deadline)", str(lost)),
        (
            "Overload",
            "last answer after the last request",
            f"{_s(o['drain_s'])} (deadline {_s(o['deadline_s'])})",
        ),
        (
            "Overload",
            "server memory (RSS, tritonserver + stubs)",
            f"{_mib(o['rss_idle_bytes'])} idle → {_mib(o['rss_peak_bytes'])} peak "
            f"(bound {_mib(o['rss_bound_bytes'])})",
        ),
        (
            "Overload",
            "canary health check during overload",
            f"{o['canary_during']} ({_s(o['canary_latency_s'])})",
        ),
        (
            "Overload",
            "recovery: first request at baseline latency",
            f"{_s(o['recovery_s'])} after the last request",
        ),
        ("Overload", "largest ssd300 batch executed", str(o.get("largest_batch", NOT_MEASURED))),
        (
            "Overload",
            f"latency after recovery (p50 of {o.get('after_samples', '?')})",
            f"{_s(o['latency_after_s'])} (baseline {_s(o['baseline_latency_s'])})",
        ),
    ]


def _batching(batching: dict | None) -> str:
    if not batching:
        return NOT_MEASURED
    return (
        f"max_batch_size {batching['max_batch_size']}, preferred_batch_size "
        f"{batching['preferred_batch_sizes'] or 'none'}, queue of {batching['max_queue_size']} "
        f"requests, queue timeout {_s(batching['queue_timeout_s'])}"
    )


def _batching_note(figures: dict) -> str | None:
    """What the largest batch under overload says about the batching settings, or None."""
    overload = _get(figures, "overload") or {}
    batching, largest = overload.get("batching"), overload.get("largest_batch")
    if not batching or not largest:
        return None
    preferred = max(batching["preferred_batch_sizes"], default=0)
    text = f"Under overload the dynamic batcher ran ssd300 batches of up to {largest} images"
    if preferred and largest > preferred:
        return (
            f"{text}, above the preferred size {preferred} (max_batch_size "
            f"{batching['max_batch_size']}): with a full queue, the batch size, and with it the latency "
            "and memory of one batch, is bounded by max_batch_size, not by the preferred size."
        )
    return f"{text} (preferred size {preferred or 'none'}, max_batch_size {batching['max_batch_size']})."


def _failover_rows(figures: dict) -> list[Row]:
    f = _get(figures, "failover")
    if not f:
        return [("Failover (kill -9)", "requests", NOT_MEASURED)]
    return [
        ("Failover (kill -9)", "requests through Detector([a, b])", str(f["requests"])),
        (
            "Failover (kill -9)",
            "server a killed (SIGKILL) after",
            f"{f['killed_after']} answers, {f['in_flight_at_kill']} in flight",
        ),
        ("Failover (kill -9)", "completed with correct detections", f"{f['completed']}/{f['requests']}"),
        ("Failover (kill -9)", "answered by server b", str(f["served_by_survivor"])),
        ("Failover (kill -9)", "slowest request (includes the failover)", _s(f["slowest_s"])),
    ]


def _sigterm_rows(figures: dict) -> list[Row]:
    t = _get(figures, "sigterm")
    if not t:
        return [("SIGTERM (make serve launcher)", "in-flight requests", NOT_MEASURED)]
    return [
        (
            "SIGTERM (make serve launcher)",
            "in flight at SIGTERM, completed",
            f"{t['in_flight_completed']}/{t['in_flight']} (last {_s(t['drain_s'])} after SIGTERM; "
            f"exit timeout {_s(t['exit_timeout_s'])})",
        ),
        (
            "SIGTERM (make serve launcher)",
            "new requests after draining began, refused cleanly",
            f"{t['new_refused']}/{t['new_requests']}: {_counts(t['new_answers'])} "
            f"(slowest {_s(t['slowest_refusal_s'])})",
        ),
        ("SIGTERM (make serve launcher)", "launcher exit code", f"{t['exit_code']} after {_s(t['exit_s'])}"),
        (
            "SIGTERM (make serve launcher)",
            "stub processes / shared-memory files left",
            f"{t['stubs_left']} / {t['shm_files_left']}",
        ),
    ]


def _stub_rows(figures: dict) -> list[Row]:
    s = _get(figures, "stub_crash")
    if not s:
        return [("Python stub killed", "readiness", NOT_MEASURED)]
    ready = s["readiness"]
    ok = sum(status == 200 for status in ready.values())
    return [
        ("Python stub killed", "stub", s["model"]),
        (
            "Python stub killed",
            "readiness endpoints still answering 200 (server behaviour)",
            f"{ok}/{len(ready)}",
        ),
        ("Python stub killed", "inference answer", s["inference"]),
        ("Python stub killed", "canary health check (chart readiness/liveness)", s["canary"]),
    ]


def _security_rows(figures: dict) -> list[Row]:
    s = _get(figures, "security")
    if not s:
        return [("Security", "restricted APIs", NOT_MEASURED)]
    rows = []
    for api, answers in sorted(s.get("restricted", {}).items()):
        rows.append(("Security", f"{api}: without key / wrong key / with key", " · ".join(answers)))
    rows.append(
        (
            "Security",
            "tracked files scanned for committed secrets",
            f"{s.get('files_scanned', NOT_MEASURED)}, findings {s.get('secrets_found', NOT_MEASURED)}",
        )
    )
    return rows


def rows(figures: dict) -> list[Row]:
    return [
        *_bad_input_rows(figures),
        *_overload_rows(figures),
        *_failover_rows(figures),
        *_sigterm_rows(figures),
        *_stub_rows(figures),
        *_security_rows(figures),
    ]


def _table(header: Iterable[str], body: Iterable[Iterable[str]]) -> list[str]:
    def line(cells):
        return (
            "| "
            + " | ".join(
                _REQUEST_ID.sub("", str(cell)).replace("|", "\\|").replace("\n", " ") for cell in cells
            )
            + " |"
        )

    header = list(header)
    return [line(header), line(["---"] * len(header)), *(line(cells) for cells in body)]


def render(figures: dict) -> str:
    meta = figures.get("meta", {})
    lines = [
        "# Reliability and security figures",
        "",
        "Generated by `make reliability` (`python -m tools.reliability_report`) from the figures "
        f"`tests/test_reliability_*.py` recorded on {meta.get('recorded_at', NOT_MEASURED)} "
        f"(commit {meta.get('commit', NOT_MEASURED)}, tritonserver {meta.get('tritonserver', NOT_MEASURED)}, "
        f"{meta.get('cpus', '?')} CPU cores, no GPU). Timings are from a shared machine and vary "
        "between runs.",
        "",
        *_table(("Area", "Figure", "Value"), rows(figures)),
    ]
    cases = _get(figures, "bad_input.cases") or []
    if cases:
        lines += ["", "## Bad input catalogue", ""]
        lines += _table(
            ("Kind", "Sent as", "Answer", "Message"),
            (
                (
                    c["kind"],
                    c["via"],
                    c["answer"],
                    _REQUEST_ID.sub("", c.get("message") or "")[:MESSAGE_CHARS],
                )
                for c in cases
            ),
        )
    notes = [*(figures.get("notes") or []), *filter(None, [_batching_note(figures)])]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.reliability_report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--figures", help=f"figures JSON (default: ${FIGURES_ENV} or {DEFAULT_FIGURES})")
    parser.add_argument("--out", help=f"Markdown file to write (default: {REPORT_NAME} next to the figures)")
    parser.add_argument(
        "--readme", help="also refresh the table between <!-- reliability:start/end --> in this file"
    )
    args = parser.parse_args(argv)
    source = figures_path(args.figures)
    try:
        figures = json.loads(source.read_text())
    except FileNotFoundError:
        print(f"error: {source} does not exist: run `make reliability` first", file=sys.stderr)
        return 1
    except json.JSONDecodeError as exc:
        print(f"error: {source} is not valid JSON ({exc})", file=sys.stderr)
        return 1
    report = render(figures)
    target = Path(args.out) if args.out else source.with_name(REPORT_NAME)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report)
    if args.readme:
        # The README shows the table under its own heading, so drop the report's title.
        update_section(
            args.readme, "reliability", report.split("\n", 1)[1] if report.startswith("# ") else report
        )
    print(report, end="")
    print(f"\n(written to {target})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
