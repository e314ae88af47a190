"""Reading checkpoints: the NGC layout, variants, and clear errors for bad files (no network)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from ssd300_build import weights as weights_module
from ssd300_build.model import SSD300
from ssd300_build.sources import load_network
from ssd300_build.weights import (
    CheckpointError,
    CheckpointUnavailable,
    load_weights,
    read_state_dict,
    sha256_of,
)

from .helpers.checkpoints import ngc_checkpoint

# Most tests build an SSD300 (its state dict is the checkpoint), some the calibrated random one.
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return SSD300().state_dict()


def assert_same_weights(loaded, state, **tolerance):
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(
            loaded[key], value.float() if value.is_floating_point() else value, **tolerance
        )


def test_ngc_training_checkpoint_loads_strictly(tmp_path, state):
    path = tmp_path / "ngc.pt"
    torch.save(ngc_checkpoint(state), path)
    loaded = read_state_dict(path)
    assert_same_weights(loaded, state)
    load_weights(SSD300(), loaded, path)  # strict: raises on any mismatch


def test_half_precision_checkpoint_is_converted_to_float32(tmp_path, state):
    path = tmp_path / "amp.pt"
    torch.save(ngc_checkpoint(state, half=True), path)
    loaded = read_state_dict(path)
    assert loaded["conf.0.weight"].dtype == torch.float32
    assert_same_weights(loaded, state, rtol=1e-3, atol=1e-3)


def test_bare_state_dict_loads(tmp_path, state):
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    assert_same_weights(read_state_dict(path), state)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's folder moved to ``tmp_path/hub`` for one test. ``set_dir`` has no counterpart
    that reads the raw setting (usually None: derived from $TORCH_HOME on each call), so the
    module global it sets is restored by monkeypatch; the next test sees the hub it expects."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_nvidia_weights_come_from_the_torch_hub_cache_without_network(hub_dir, monkeypatch, state):
    monkeypatch.setenv("TORCH_HOME", str(hub_dir.parent))
    monkeypatch.setattr(weights_module, "NGC_CHECKPOINT_URL", "http://127.0.0.1:9/unreachable")
    cached = weights_module.hub_checkpoint_path()
    assert cached.is_relative_to(hub_dir)
    cached.parent.mkdir(parents=True)
    torch.save(ngc_checkpoint(state), cached)
    network, metadata = load_network("nvidia")
    assert metadata["weights"] == "nvidia" and metadata["sha256"] == sha256_of(cached)
    assert_same_weights(network.state_dict(), state)


def test_offline_nvidia_download_fails_with_advice(hub_dir, monkeypatch):
    monkeypatch.setattr(weights_module, "NGC_CHECKPOINT_URL", "http://127.0.0.1:9/unreachable")
    with pytest.raises(CheckpointUnavailable, match="WEIGHTS=") as error:
        weights_module.fetch_nvidia_checkpoint(timeout_s=2, progress=False)
    assert str(weights_module.hub_checkpoint_path()) in str(error.value)
    assert not list((hub_dir / "checkpoints").glob("*.partial"))


def test_auto_falls_back_to_random_weights_with_a_warning(hub_dir, monkeypatch, caplog):
    monkeypatch.setattr(weights_module, "NGC_CHECKPOINT_URL", "http://127.0.0.1:9/unreachable")
    with caplog.at_level(logging.WARNING):
        _, metadata = load_network("auto")
    assert metadata["weights"] == "random"
    assert "RANDOM weights" in caplog.text


def test_missing_key_is_named(tmp_path, state):
    broken = dict(state)
    del broken["conf.3.bias"]
    with pytest.raises(CheckpointError, match=r"missing key.*conf\.3\.bias"):
        load_weights(SSD300(), broken, "ckpt.pt")


def test_misshaped_key_is_named_with_both_shapes(state):
    broken = dict(state)
    broken["loc.0.weight"] = torch.zeros(8, 1024, 3, 3)
    with pytest.raises(
        CheckpointError, match=r"loc\.0\.weight is \[8, 1024, 3, 3\], SSD300 needs \[16, 1024, 3, 3\]"
    ):
        load_weights(SSD300(), broken, "ckpt.pt")


def test_unexpected_keys_are_named(state):
    extended = {**state, "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected key.*extra\.weight"):
        load_weights(SSD300(), extended, "ckpt.pt")


def test_truncated_file_gives_a_clear_error(tmp_path, state):
    whole = tmp_path / "whole.pt"
    torch.save(state, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable PyTorch checkpoint"):
        read_state_dict(truncated)


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", bytes(range(256)) * 10])
def test_non_checkpoint_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"weights\.pt: not a readable PyTorch checkpoint"):
        read_state_dict(path)


class NotAllowed:
    pass


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: it pickles a .*NotAllowed object"):
        read_state_dict(path)


def test_checkpoint_without_tensors_is_refused(tmp_path):
    path = tmp_path / "config.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no SSD300 state dict"):
        read_state_dict(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint file"):
        read_state_dict(tmp_path / "nope.pt")


def test_sha256_mismatch_is_refused(tmp_path, state):
    path = tmp_path / "bare.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="sha256"):
        read_state_dict(path, expected_sha256="0" * 64)
    assert read_state_dict(path, expected_sha256=sha256_of(path)).keys() == state.keys()


def test_build_cli_reports_a_bad_checkpoint_in_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "ssd300_build", "--weights", str(bad), "--repository", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not a readable PyTorch checkpoint")
    )
    assert "Traceback" not in result.stderr
