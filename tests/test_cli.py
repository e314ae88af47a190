"""``ssd300-detect``: inputs, COCO ids, and end-to-end runs against the session's server."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from ssd300_client import COCO_CATEGORY_IDS
from ssd300_client.cli import build_parser, main, request_parameters
from ssd300_client.cli_inputs import collect_inputs
from ssd300_client.cli_outputs import OutputNames, output_suffix, yolo_lines
from ssd300_client.cli_run import coco_image_ids, format_detections
from ssd300_client.drawing import draw_banner
from ssd300_common import contract
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


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--batch-size", "0"),
        ("--batch-size", "100"),  # above the models' max_batch_size: a usage error, no traceback
        ("--batch-size", "eight"),
        ("--iou", "1.5"),
        ("--iou", "abc"),
        ("--min-score", "-0.1"),
        ("--max-det", "0"),
        ("--max-det", "201"),
        ("--classes", "person,unicorn"),
        ("--classes", "12"),  # COCO category 12 is one of the unused ids
        ("--classes", ","),
        ("--every", "0"),
        ("--format", "gif"),
        ("--timeout", "0"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_naming_the_option(option, value, capsys):
    assert main([option, value, "photo.jpg"]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_a_client_certificate_without_its_key_is_a_usage_error(tmp_path, capsys):
    assert main(["--client-cert", str(tmp_path / "c.pem"), "photo.jpg"]) == 2
    assert "--client-key" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--ca-cert", "--client-cert", "--client-key"])
def test_a_missing_certificate_file_is_a_usage_error_naming_its_option(option, tmp_path, capsys):
    present = tmp_path / "present.pem"
    present.write_text("not checked here")
    files = {"--ca-cert": str(present), "--client-cert": str(present), "--client-key": str(present)}
    files[option] = str(tmp_path / "nope.pem")
    assert main([*(item for pair in files.items() for item in pair), "photo.jpg"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {option}: no such file {str(tmp_path / 'nope.pem')!r}"


def test_help_says_what_each_exit_status_means(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "0 every input processed" in text
    assert "1 some inputs were skipped" in text and "the run stopped on an error after it began" in text
    assert "an inference timeout" in text and "2 usage error" in text


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ssd300-detect 0.")


def test_settings_become_the_postprocess_request_parameters():
    args = build_parser().parse_args(["--iou", "0.5", "--max-det", "10", "--min-score", "0.2", "x.jpg"])
    assert request_parameters(args) == {
        contract.NMS_IOU_PARAMETER: 0.5,
        contract.MAX_DETECTIONS_PARAMETER: 10,
        contract.SCORE_THRESHOLD_PARAMETER: 0.2,
    }
    assert request_parameters(build_parser().parse_args(["x.jpg"])) is None  # the server's defaults


def test_classes_take_names_and_coco_category_ids():
    args = build_parser().parse_args(["--classes", "person, Traffic_Light,13", "x.jpg"])
    assert args.classes == {1, 10, 12}  # model labels: 13 is COCO's stop sign, label 12


def test_folders_give_their_images_sorted_and_explicit_files_are_kept_whatever_their_suffix(tmp_path):
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    extra = tmp_path / "scan.data"
    extra.write_bytes(b"x")
    inputs = collect_inputs([str(tmp_path), str(extra), str(tmp_path / "b.jpg")])
    assert [p.name for p in inputs.images] == ["a.PNG", "b.jpg", "scan.data"]  # b.jpg once
    assert inputs.missing == [] and inputs.videos == []


def test_subfolders_are_searched_only_with_recursive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("top.jpg", "a/mid.png", "a/b/deep.webp", "a/b/clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    flat = collect_inputs([str(tmp_path)])
    assert [p.name for p in flat.images] == ["top.jpg"] and flat.videos == []
    deep = collect_inputs([str(tmp_path)], recursive=True)
    assert [p.name for p in deep.images] == ["deep.webp", "mid.png", "top.jpg"]
    assert [p.name for p in deep.videos] == ["clip.mp4"]


def test_glob_patterns_are_expanded_and_inputs_naming_nothing_are_reported(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.jpg").write_bytes(b"x")
    inputs = collect_inputs(
        [str(tmp_path / "**" / "*.jpg"), str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]
    )
    assert [p.name for p in inputs.images] == ["one.jpg"]
    assert inputs.missing == [str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]


def test_coco_file_names_give_their_number_as_image_id(tmp_path):
    assert coco_image_ids([tmp_path / "000000000139.jpg", tmp_path / "000000000285.jpg"]) == [139, 285]


def test_other_file_names_are_numbered_from_one_in_order(tmp_path):
    assert coco_image_ids([tmp_path / "000000000139.jpg", tmp_path / "cat.jpg"]) == [1, 2]


def test_urls_give_their_last_path_part_as_name_for_ids(tmp_path):
    assert coco_image_ids(["http://h/x/000000000139.jpg?size=1", tmp_path / "000000000285.jpg"]) == [139, 285]


def test_outputs_with_the_same_name_do_not_overwrite_each_other(tmp_path):
    names = OutputNames(tmp_path)
    assert [names.stem_for("x"), names.stem_for("x"), names.stem_for("y")] == ["x", "x_2", "y"]


def test_save_txt_lines_are_yolo_style_class_index_and_normalised_centre_and_size():
    from ssd300_client import Detections

    detections = Detections([[10, 20, 50, 100]], [0.75], [3], image_size=(200, 100))  # label 3: car
    assert yolo_lines(detections) == "2 0.300000 0.300000 0.400000 0.400000 0.750000\n"


@pytest.mark.parametrize(
    ("source", "chosen", "expected"),
    [
        (".jpg", None, ".jpg"),
        (".jpeg", None, ".jpeg"),
        (".webp", None, ".webp"),
        (".tiff", None, ".tiff"),
        (".gif", None, ".png"),  # Pillow writes GIFs, but a palette would ruin the boxes' colours
        ("", None, ".png"),  # a URL without a suffix
        (".data", None, ".png"),
        (".jpg", "png", ".png"),
        (".gif", "webp", ".webp"),
        (".png", "tiff", ".tif"),
    ],
)
def test_annotated_images_keep_the_inputs_format_unless_format_is_given(source, chosen, expected):
    assert output_suffix(source, chosen) == expected


# Output paths are checked before connecting: the unreachable --url below is never tried.


def _unreachable(sample_paths) -> list[str]:
    return [str(sample_paths[0]), "--url", f"127.0.0.1:{free_port()}", "--retries", "0"]


def test_out_naming_an_existing_file_is_a_usage_error(sample_paths, tmp_path, capsys):
    existing = tmp_path / "a.jpg"
    existing.write_bytes(b"x")
    assert main([*_unreachable(sample_paths), "--out", str(existing)]) == 2
    assert capsys.readouterr().err == f"error: --out: {existing} exists and is not a folder\n"


def test_save_txt_where_no_folder_can_be_made_is_a_usage_error(sample_paths, capsys):
    assert main([*_unreachable(sample_paths), "--save-txt", "/proc/ssd300-labels"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --save-txt: cannot create the folder /proc/ssd300-labels (")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_json_naming_a_folder_or_a_path_that_cannot_be_made_is_a_usage_error(sample_paths, tmp_path, capsys):
    assert main([*_unreachable(sample_paths), "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --json: {tmp_path} is a folder, not a file\n"
    assert main([*_unreachable(sample_paths), "--json", "/proc/ssd300/results.json"]) == 2
    assert capsys.readouterr().err.startswith("error: --json: cannot create the folder /proc/ssd300 (")
    under_a_file = tmp_path / "file.txt"
    under_a_file.write_text("x")
    assert main([*_unreachable(sample_paths), "--json", str(under_a_file / "results.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --json: {under_a_file} exists and is not a folder")


def test_json_parent_folders_are_made_before_connecting(sample_paths, tmp_path, capsys):
    results = tmp_path / "new" / "deeper" / "results.json"
    assert main([*_unreachable(sample_paths), "--json", str(results)]) == 2  # the server, this time
    assert "--json" not in capsys.readouterr().err
    assert results.parent.is_dir() and not results.exists()


def test_an_output_that_cannot_be_written_mid_run_stops_it_with_exit_one(
    sample_paths, tmp_path, monkeypatch, capsys
):
    """The --json folder vanishes after the up-front check: the write fails after the work."""
    from ssd300_client import Detections, cli

    results = tmp_path / "gone" / "results.json"

    class Vanishing:  # a detector whose answers arrive after --json's folder was removed
        server_weights = "trained"

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        def check_ready(self):
            shutil.rmtree(results.parent)

        def detect_iter(self, paths, **options):
            for index, _ in enumerate(paths):
                yield index, Detections([[1, 2, 3, 4]], [0.9], [1], image_size=(10, 10))

    monkeypatch.setattr(cli, "Detector", Vanishing)
    assert main([str(sample_paths[0]), "--json", str(results)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --json: cannot write {results} (No such file or directory)\n"


def test_the_random_weights_banner_is_a_red_strip_across_the_top():
    picture = draw_banner(
        Image.new("RGB", (400, 300), (0, 0, 255)), "RANDOM WEIGHTS — detections are meaningless"
    )
    top = [picture.getpixel((x, 1)) for x in range(0, 400, 10)]
    assert all(pixel == (200, 0, 0) for pixel in top)
    assert picture.getpixel((200, 290)) == (0, 0, 255)  # the rest of the picture is untouched


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
        annotated = Image.open(out / source.name)  # the input's format kept
        assert annotated.format == "JPEG" and annotated.size == Image.open(source).size
        # The test server runs random weights: every annotated image says so.
        assert annotated.convert("RGB").getpixel((annotated.width // 2, 1)) == pytest.approx(
            (200, 0, 0), abs=40
        )
    document = json.loads(results.read_text())
    assert {(i["id"], i["file_name"]) for i in document["images"]} == {
        (139, str(photo_folder / "000000000139.jpg")),
        (285, str(photo_folder / "000000000285.jpg")),
    }
    detections = document["annotations"]
    assert detections and {d["image_id"] for d in detections} == {139, 285}
    for d in detections:
        assert set(d) == {"id", "image_id", "category_id", "bbox", "score", "area"}
        assert d["category_id"] in COCO_CATEGORY_IDS and 0.05 < d["score"] <= 1
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0
    assert "2 images" in capsys.readouterr().err


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_detection_settings_reach_the_server_and_classes_filter_every_output(
    triton_server, photo_folder, tmp_path
):
    def run(*options):
        results, labels = tmp_path / f"r{len(options)}.json", tmp_path / f"labels{len(options)}"
        argv = [str(photo_folder), "--url", triton_server.grpc_url, "--json", str(results)]
        assert main([*argv, "--save-txt", str(labels), *options]) == 0
        document = json.loads(results.read_text())
        return document["annotations"], labels

    everything, _ = run()
    per_image = {i: sum(d["image_id"] == i for d in everything) for i in (139, 285)}
    assert max(per_image.values()) > 3  # so that the limit below has something to cut
    limited, labels = run("--max-det", "3", "--min-score", "0.2", "--iou", "0.3")
    assert all(sum(d["image_id"] == i for d in limited) <= 3 for i in (139, 285))
    assert limited and all(d["score"] > 0.2 for d in limited)
    for image_id in (139, 285):  # --save-txt: the same detections, one line each
        lines = (labels / f"{image_id:012d}.txt").read_text().splitlines()
        assert len(lines) == sum(d["image_id"] == image_id for d in limited)
        for line in lines:
            label, *box, score = line.split()
            assert 0 <= int(label) < 80 and all(0 <= float(v) <= 1 for v in box) and float(score) > 0.2
    top_class = max(
        {d["category_id"] for d in everything}, key=lambda c: sum(d["category_id"] == c for d in everything)
    )
    only, _ = run("--classes", str(top_class), "--threshold", "0.1", "-v")
    assert only and {d["category_id"] for d in only} == {top_class}
    assert all(d["score"] >= 0.1 for d in only)


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_format_sets_the_annotated_images_format_and_gifs_become_pngs(
    triton_server, photo_folder, tmp_path, capsys
):
    Image.open(photo_folder / "000000000139.jpg").save(photo_folder / "000000000139.gif")
    out = tmp_path / "out"
    common = [str(photo_folder / "000000000139.gif"), "--url", triton_server.grpc_url, "--out", str(out)]
    assert main(common) == 0, capsys.readouterr().err
    assert Image.open(out / "000000000139.png").format == "PNG"  # Pillow's GIF palette would ruin it
    assert main([str(photo_folder / "000000000285.jpg"), *common[1:], "--format", "webp"]) == 0
    assert Image.open(out / "000000000285.webp").format == "WEBP"


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_an_unreadable_file_is_reported_skipped_and_exits_one(triton_server, photo_folder, tmp_path, capsys):
    (photo_folder / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "out"
    code = main([str(photo_folder), "--url", triton_server.grpc_url, "--out", str(out), "--batch-size", "2"])
    assert code == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["000000000139.jpg", "000000000285.jpg"]


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
    assert main([str(tmp_path / "missing.jpg")]) == 2  # only inputs that name nothing: the same code


def test_max_print_shows_the_best_detections_and_counts_the_rest():
    from ssd300_client import Detections

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
