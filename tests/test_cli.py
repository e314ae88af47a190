"""``ssd300-detect``: inputs, COCO ids, and end-to-end runs against the session's server."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from ssd300_client import COCO_CATEGORY_IDS
from ssd300_client.cli import annotated_path, coco_image_ids, collect_images, main
from ssd300_serving.embedded_server import free_port

# ----- without a server -----


def test_help_reads_well_and_exits_zero(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--json",
        "--threshold",
        "--url",
        "--protocol",
        "--server-side-decode",
        "--concurrency",
        "--batch-size",
        "--print",
    ):
        assert option in text
    assert "exit status" in text and "image_id" in text


def test_a_bad_option_value_is_a_usage_error(capsys):
    assert main(["--batch-size", "0", "photo.jpg"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_folders_give_their_images_sorted_and_explicit_files_are_kept_whatever_their_suffix(tmp_path):
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    extra = tmp_path / "scan.data"
    extra.write_bytes(b"x")
    paths, missing = collect_images([str(tmp_path), str(extra), str(tmp_path / "b.jpg")])
    assert [p.name for p in paths] == ["a.PNG", "b.jpg", "scan.data"]  # b.jpg once
    assert missing == []


def test_glob_patterns_are_expanded_and_inputs_naming_nothing_are_reported(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.jpg").write_bytes(b"x")
    paths, missing = collect_images(
        [str(tmp_path / "**" / "*.jpg"), str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]
    )
    assert [p.name for p in paths] == ["one.jpg"]
    assert missing == [str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]


def test_coco_file_names_give_their_number_as_image_id(tmp_path):
    assert coco_image_ids([tmp_path / "000000000139.jpg", tmp_path / "000000000285.jpg"]) == [139, 285]


def test_other_file_names_are_numbered_from_one_in_order(tmp_path):
    assert coco_image_ids([tmp_path / "000000000139.jpg", tmp_path / "cat.jpg"]) == [1, 2]


def test_annotated_images_with_the_same_name_do_not_overwrite_each_other(tmp_path):
    taken: set = set()
    first = annotated_path(tmp_path, tmp_path / "a" / "x.jpg", taken)
    second = annotated_path(tmp_path, tmp_path / "b" / "x.png", taken)
    assert (first.name, second.name) == ("x.png", "x_2.png")


# ----- against the server -----


@pytest.fixture
def photo_folder(tmp_path, sample_paths):
    """Two sample photos under COCO-style names."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for number, source in zip((139, 285), sample_paths[:2], strict=True):
        shutil.copy(source, folder / f"{number:012d}.jpg")
    return folder


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_a_folder_gives_annotated_images_and_coco_results(triton_server, photo_folder, tmp_path, capsys):
    out, results = tmp_path / "out", tmp_path / "results.json"
    code = main(
        [str(photo_folder), "--url", triton_server.grpc_url, "--out", str(out), "--json", str(results)]
    )
    assert code == 0
    for source in sorted(photo_folder.iterdir()):
        annotated = Image.open(out / f"{source.stem}.png")
        assert annotated.format == "PNG" and annotated.size == Image.open(source).size
    detections = json.loads(results.read_text())
    assert detections and {d["image_id"] for d in detections} == {139, 285}
    for d in detections:
        assert set(d) == {"image_id", "category_id", "bbox", "score"}
        assert d["category_id"] in COCO_CATEGORY_IDS and 0.05 < d["score"] <= 1
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0
    assert "2 images" in capsys.readouterr().err


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_an_unreadable_file_is_reported_skipped_and_exits_one(triton_server, photo_folder, tmp_path, capsys):
    (photo_folder / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "out"
    code = main([str(photo_folder), "--url", triton_server.grpc_url, "--out", str(out), "--batch-size", "2"])
    assert code == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["000000000139.png", "000000000285.png"]


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_print_with_server_side_decode_over_http_lists_confident_detections(
    triton_server, sample_paths, capsys
):
    code = main(
        [
            str(sample_paths[0]),
            "--url",
            triton_server.http_url,
            "--protocol",
            "http",
            "--server-side-decode",
            "--print",
            "--threshold",
            "0.9",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{sample_paths[0]}: ")
    scores = [float(line.split()[-5]) for line in printed.splitlines()[1:]]
    assert scores and all(score >= 0.9 for score in scores)


def test_an_unreachable_server_exits_two(sample_paths, capsys):
    code = main([str(sample_paths[0]), "--url", f"127.0.0.1:{free_port()}", "--retries", "0"])
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_no_images_at_all_exits_two(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err


def test_max_print_shows_the_best_detections_and_counts_the_rest():
    from ssd300_client import Detections
    from ssd300_client.cli import format_detections

    detections = Detections(
        xyxy=[[0, 0, 10, 10]] * 3,
        confidence=[0.9, 0.8, 0.7],
        class_id=[1, 16, 17],
        image_size=(20, 20),
        name="x.jpg",
    )
    lines = format_detections(detections, limit=2).splitlines()
    assert lines[0] == "x.jpg: 3 objects"
    assert [line.split()[0] for line in lines[1:3]] == ["person", "cat"]
    assert lines[3].strip() == "… and 1 more"
    assert len(format_detections(detections).splitlines()) == 4  # no limit: all three
