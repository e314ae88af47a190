"""The reliability report lays out what the suites recorded, and only that: an area the run
recorded nothing for reads "not measured"; the bad-input summary is counted from the cases."""

from __future__ import annotations

import json

from tools import reliability_report

from .helpers.figures import Figures, seconds, tally


def bad_input_case(figures: Figures, kind: str, answer: str, *, side: str = "server", non_finite: int = 0):
    figures.case(
        kind=kind,
        side=side,
        via="gRPC ssd300_image",
        answer=answer,
        message=f"[request id: <id_unknown>] {kind}: refused | named",
        healthy_after=answer != "TypeError",  # one case left the server unhealthy
        non_finite=non_finite,
    )


def test_recorded_figures_become_the_report_and_missing_areas_read_not_measured(tmp_path):
    figures = Figures()
    figures.row("Security", "files scanned", "115, findings 0")
    figures.row("Overload", "requests sent", 224)
    figures.row("Overload", "lost (no answer by the deadline)", 0)
    bad_input_case(figures, "truncated PNG", "INVALID_ARGUMENT")
    bad_input_case(figures, "truncated JPEG", "INVALID_ARGUMENT")
    bad_input_case(figures, "a list", "TypeError", side="client")
    bad_input_case(figures, "1-bit PNG", "served", non_finite=2)
    figures.note("a note")
    figures.note("a note")  # recorded once
    source, out = tmp_path / "figures.json", tmp_path / "docs" / "figures.md"
    figures.write(source)
    assert reliability_report.main(["--figures", str(source), "--out", str(out)]) == 0
    report = out.read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[2:] == [
        "| Bad input | kinds tried | 4 in 4 cases (3 sent to the server, 1 through the client) |",
        "| Bad input | refused with an error naming the problem | 3: INVALID_ARGUMENT 2, TypeError 1 |",
        "| Bad input | odd but valid inputs served | 1 |",
        "| Bad input | server live and canary inference ok after each | 3/4 |",
        "| Bad input | NaN or inf values in any response | 2 |",
        "| Overload | requests sent | 224 |",  # the areas in their order, rows as recorded
        "| Overload | lost (no answer by the deadline) | 0 |",
        "| Failover (kill -9) | all figures | not measured |",
        "| SIGTERM (launcher) | all figures | not measured |",
        "| Stub killed | all figures | not measured |",
        "| Security | files scanned | 115, findings 0 |",
        "| Kind | Sent as | Answer | Message |",
        "| --- | --- | --- | --- |",
        "| truncated PNG | gRPC ssd300_image | INVALID_ARGUMENT | truncated PNG: refused \\| named |",
        "| truncated JPEG | gRPC ssd300_image | INVALID_ARGUMENT | truncated JPEG: refused \\| named |",
        "| a list | gRPC ssd300_image | TypeError | a list: refused \\| named |",
        "| 1-bit PNG | gRPC ssd300_image | served | 1-bit PNG: refused \\| named |",
    ]
    assert report.endswith("## Notes\n\n- a note\n")
    assert f"(commit {json.loads(source.read_text())['meta']['commit']}," in report


def test_a_run_without_bad_input_cases_has_no_catalogue(tmp_path):
    source = tmp_path / "figures.json"
    source.write_text(json.dumps({"rows": [["Overload", "requests sent", "5"]]}))
    assert reliability_report.main(["--figures", str(source), "--out", str(tmp_path / "r.md")]) == 0
    report = (tmp_path / "r.md").read_text()
    assert "| Bad input | all figures | not measured |" in report
    assert "catalogue" not in report and "## Notes" not in report


def test_values_are_worded_in_seconds_or_milliseconds_and_answers_tallied():
    assert (seconds(0.0094), seconds(1.0), seconds(36.94)) == ("9 ms", "1.0 s", "36.9 s")
    assert tally(["NOT_FOUND", "UNAVAILABLE", "NOT_FOUND"]) == "NOT_FOUND 2, UNAVAILABLE 1"
    assert tally([]) == "none"


def test_missing_figures_are_an_error_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nothing.json"
    assert reliability_report.main(["--figures", str(missing), "--out", str(tmp_path / "r.md")]) == 1
    assert f"{missing} does not exist: run `make reliability` first" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
