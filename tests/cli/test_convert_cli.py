"""`intsim convert fqss`: a checkpoint in, a loadable model and a report out; bad checkpoints exit 1."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import intsim
from intsim.cli import main

torch = pytest.importorskip("torch")

SMALL = dict(model="ConvTasNetQ", n_filters=32, bn_chan=16, hid_chan=32, n_blocks=2, n_repeats=2, kernel_size=8,
             stride=4, sample_rate=8000, n_splitter=2, n_combiner=2, n_src=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from intsim.converters import fqss

    folder = tmp_path_factory.mktemp("ckpt")
    state_dict, config = fqss.random_checkpoint(SMALL, seed=4, calib_passes=3, calib_samples=1000)
    torch.save(state_dict, folder / "checkpoint.pth")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_convert_writes_a_runnable_model_and_reports(checkpoint, tmp_path):
    out = tmp_path / "model.npz"
    result = invoke("convert", "fqss", checkpoint / "checkpoint.pth", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == str(out)
    assert report["tensors"] and all(abs(t["offset_lsb"]) <= 0.5 + 1e-6 for t in report["tensors"])
    assert any("combiner" in f["where"] for f in report["float_ops"])
    model = intsim.load(out)
    assert model.metadata["stems"] == ["s1", "s2"] and model.metadata["sample_rate"] == 8000
    y = model.run(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 800)).astype(np.float32))
    assert next(iter(y.values())).shape[:2] == (1, 2)


def test_convert_text_report(checkpoint, tmp_path):
    result = invoke("convert", "fqss", checkpoint, "-o", tmp_path / "m.npz")
    assert result.exit_code == 0, result.output
    assert "FQSS conversion: ConvTasNetQ" in result.stdout and "nudged zero point" in result.stdout


def test_checkpoint_not_matching_config_names_the_keys(checkpoint, tmp_path):
    state_dict = torch.load(checkpoint / "checkpoint.pth", weights_only=True)
    del state_dict["encoder.conv1d.weight"]
    state_dict["masker.bottleneck.1.conv1d.bias"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(state_dict, bad)
    out = tmp_path / "m.npz"
    result = invoke("convert", "fqss", bad, "--config", checkpoint / "config.json", "-o", out)
    assert result.exit_code == 1
    assert "encoder.conv1d.weight" in result.stderr and "masker.bottleneck.1.conv1d.bias" in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_truncated_checkpoint_is_an_error(checkpoint, tmp_path):
    data = (checkpoint / "checkpoint.pth").read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "m.npz"
    result = invoke("convert", "fqss", bad, "--config", checkpoint / "config.json", "-o", out)
    assert result.exit_code == 1 and result.stderr.startswith("error:") and not out.exists()
