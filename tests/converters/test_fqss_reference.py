"""FQSS ConvTasNet torch reference: bit-exactness, config inference, safe checkpoint loading."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import intsim.converters.fqss as fqss
from intsim.converters.fqss import CheckpointError, ConfigError, FQSSConfig

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SPEECH_DIR = SHARED / "fqss" / "convtasnet_random"
MUSIC_KEYS = SHARED / "fqss" / "convtasnet_music_keys.json"


def need_torch():
    return pytest.importorskip("torch", reason="torch is not installed")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared FQSS material not found at {path.resolve()}")
    return path


SMALL = dict(n_filters=32, bn_chan=16, hid_chan=32, n_blocks=2, n_repeats=2, kernel_size=8, stride=4, sample_rate=8000)
CONFIGS = {
    "speech_s1_c1_2src": dict(model="ConvTasNetQ", n_splitter=1, n_combiner=1, n_src=2),
    "speech_s2_c2_3src": dict(model="ConvTasNetQ", n_splitter=2, n_combiner=2, n_src=3),
    "speech_s2_c1_skip24": dict(model="ConvTasNetQ", n_splitter=2, n_combiner=1, n_src=2, skip_chan=24),
    "speech_s1_c2_sigmoid": dict(model="ConvTasNetQ", n_splitter=1, n_combiner=2, n_src=2, mask_act="sigmoid"),
    "speech_in_quant": dict(model="ConvTasNetQ", n_splitter=2, n_combiner=2, n_src=2, in_quant=True),
    "music_2ch_4stems": dict(model="ConvTasNetMusicQ", audio_channels=2, n_src=4, n_splitter=2, n_combiner=2),
    "music_1ch_2stems_s1": dict(model="ConvTasNetMusicQ", audio_channels=1, n_src=2, n_splitter=1, n_combiner=1,
                                sources=["voice", "rest"]),
}
CALIB = dict(calib_passes=3, calib_samples=1000)


@pytest.fixture(scope="module")
def shared_speech():
    need_torch()
    need(SPEECH_DIR / "io.npz")
    state_dict, cfg = fqss.load_checkpoint(SPEECH_DIR / "checkpoint.pth", SPEECH_DIR / "config.json")
    return state_dict, cfg


# ---------------------------------------------------------------------------------------------
# The shared FQSS checkpoint


def test_shared_checkpoint_bit_exact(shared_speech):
    """The FQSS QAT output in io.npz, bit for bit.

    torch's CPU GEMM blocking depends on the thread count (1 or 16 threads flip a few rounding
    decisions that cascade: ~15k of 16k samples differ); io.npz matches at 2..8 threads, so the
    test runs at 2, the thread count of the machine that made it.
    """
    torch = need_torch()
    state_dict, cfg = shared_speech
    model = fqss.build_reference(cfg)
    model.load_state_dict(state_dict, strict=True)
    io = np.load(SPEECH_DIR / "io.npz")
    x = torch.from_numpy(io["input"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            out = model(x)
            batch = model(torch.cat([x, 0.5 * x]))  # the splitter's max is the whole batch's: x's
    finally:
        torch.set_num_threads(threads)
    ref = torch.from_numpy(io["output"])
    assert out.dtype == torch.float32 and out.shape == ref.shape == (1, 2, 8000)
    n_diff = int((out != ref).sum())
    assert n_diff == 0, f"{n_diff} samples differ, max |diff| {float((out - ref).abs().max())}"
    assert torch.equal(out, ref) and np.array_equal(out.numpy(), io["output"])
    assert batch.shape == (2, 2, 8000) and torch.equal(batch[:1], ref)


def test_shared_checkpoint_layout(shared_speech):
    state_dict, cfg = shared_speech
    meta = json.loads((SPEECH_DIR / "config.json").read_text())
    shapes = {k: list(v.shape) for k, v in state_dict.items()}
    assert list(fqss.expected_shapes(cfg)) == list(state_dict) == list(meta["state_dict_keys"])  # order too
    assert shapes == meta["state_dict_keys"]
    assert sum(v.numel() for v in state_dict.values()) == meta["n_parameters"]
    from intsim.converters.fqss.quant import ActivationFakeQuantize, WeightFakeQuantize
    mods = list(fqss.build_reference(cfg).modules())
    assert sum(isinstance(m, ActivationFakeQuantize) for m in mods) == meta["n_activation_quantizers"] == 200
    assert sum(isinstance(m, WeightFakeQuantize) for m in mods) == meta["n_weight_quantizers"] == 101


def test_shared_config_resolves_from_json_alone():
    raw = fqss.read_config(need(SPEECH_DIR / "config.json"))
    shapes = raw["state_dict_keys"]
    cfg, conflicts = fqss.resolve_config(raw, shapes)
    assert conflicts == []
    assert cfg == fqss.resolve_config(raw)[0]  # the json states everything the shapes reveal
    assert (cfg.model, cfg.n_filters, cfg.kernel_size, cfg.stride, cfg.bn_chan, cfg.hid_chan, cfg.skip_chan,
            cfg.conv_kernel, cfg.n_blocks, cfg.n_repeats, cfg.n_src, cfg.audio_channels, cfg.n_splitter,
            cfg.n_combiner, cfg.mask_act, cfg.sample_rate, cfg.normalize, cfg.bias, cfg.out_quant) == (
        "ConvTasNetQ", 512, 16, 8, 128, 512, 128, 3, 8, 3, 2, 1, 2, 2, "relu", 8000, True, True, True)


# ---------------------------------------------------------------------------------------------
# Config inference from shapes (no torch needed)


def test_infer_speech_hyperparameters_from_shapes_only():
    shapes = fqss.read_config(need(SPEECH_DIR / "config.json"))["state_dict_keys"]
    model, v = fqss.infer_from_shapes(shapes)
    assert model == "ConvTasNetQ"
    assert v == dict(n_filters=512, kernel_size=16, bn_chan=128, hid_chan=512, conv_kernel=3, skip_chan=128,
                     n_layers=24, n_src=2, audio_channels=1, n_splitter=2, n_combiner=2, out_quant=True,
                     in_quant=False, bias=True)


def test_yaml_config_without_architecture_is_completed_from_shapes(tmp_path):
    """An FQSS-style yaml (model_cfg only, no quantization section) + shapes of a small model."""
    cfg0 = FQSSConfig.create("ConvTasNetQ", **{**SMALL, "n_blocks": 3, "n_repeats": 2}, n_src=3, n_splitter=2, n_combiner=2)
    shapes = json_shapes(cfg0)
    (tmp_path / "conf.yaml").write_text("model_cfg:\n  name: ConvTasNet\n  stride: 4\n  n_blocks: 3\n")
    cfg, conflicts = fqss.resolve_config(fqss.read_config(tmp_path / "conf.yaml"), shapes)
    assert conflicts == [] and cfg == cfg0  # N, L, B, H, P, n_src, n_splitter, n_combiner, R from shapes


def test_speech_block_split_needs_the_config():
    cfg0 = FQSSConfig.create("ConvTasNetQ", **{**SMALL, "n_blocks": 3, "n_repeats": 2})
    shapes = json_shapes(cfg0)
    cfg, conflicts = fqss.resolve_config({"model_cfg": {"name": "ConvTasNet", "stride": 4}}, shapes)
    assert conflicts and cfg.n_layers != 6  # the default X=8 cannot split 6 blocks: reported
    assert "n_blocks*n_repeats" in conflicts[0] and "6" in conflicts[0]
    cfg, conflicts = fqss.resolve_config({"model_cfg": {"name": "ConvTasNet", "n_repeats": 2}}, shapes)
    assert (cfg.n_blocks, cfg.n_repeats, conflicts) == (3, 2, [])


def json_shapes(cfg):
    need_torch()
    return fqss.expected_shapes(cfg)


def test_infer_music_hyperparameters_from_shapes():
    raw = json.loads(need(MUSIC_KEYS).read_text())
    model, v = fqss.infer_from_shapes(raw["state_dict_keys"])
    assert model == "ConvTasNetMusicQ"
    assert v == dict(n_filters=256, kernel_size=20, bn_chan=256, hid_chan=512, conv_kernel=3, n_repeats=4,
                     n_blocks=10, n_src=4, audio_channels=2, n_splitter=2, n_combiner=2, out_quant=True,
                     in_quant=False, bias=False)
    cfg, conflicts = fqss.resolve_config({}, raw["state_dict_keys"])  # no config at all: stride etc. defaults
    assert conflicts == [] and (cfg.stride, cfg.sample_rate, cfg.normalize) == (10, 44100, False)


def test_music_module_keys_match_fqss_exactly():
    raw = json.loads(need(MUSIC_KEYS).read_text())
    need_torch()
    cfg, conflicts = fqss.resolve_config(raw, raw["state_dict_keys"])
    assert conflicts == []
    assert cfg.sources == ("drums", "bass", "other", "vocals") and cfg.stride == 10
    expected = fqss.expected_shapes(cfg)
    assert list(expected.items()) == [(k, tuple(s)) for k, s in raw["state_dict_keys"].items()]
    assert sum(int(np.prod(s)) for s in expected.values()) == raw["n_parameters"]


def test_config_json_round_trip_and_errors(tmp_path):
    for kw in CONFIGS.values():
        cfg = FQSSConfig.create(**{**SMALL, **kw})
        assert FQSSConfig.from_dict(cfg.to_json_dict()) == cfg
        path = tmp_path / "c.json"
        path.write_text(json.dumps(cfg.to_json_dict()))
        assert FQSSConfig.from_dict(fqss.read_config(path)) == cfg
    with pytest.raises(ConfigError, match="unsupported FQSS model"):
        fqss.resolve_config({"model_cfg": {"name": "DPTNet"}})
    with pytest.raises(ConfigError, match="inout_nl_quant"):
        fqss.resolve_config({"model_cfg": {"name": "ConvTasNet", "quantization": {"inout_nl_quant": True}}})
    with pytest.raises(ConfigError, match="n_combiner > 2"):
        FQSSConfig.create("ConvTasNetQ", n_combiner=3)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        fqss.read_config(tmp_path / "bad.json")


def test_yaml_needs_pyyaml_with_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("model_cfg:\n  name: ConvTasNet\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError, match="needs PyYAML"):
        fqss.read_config(tmp_path / "c.yaml")


def test_package_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import intsim.converters.fqss as f\n"
            "cfg, c = f.resolve_config({'model_cfg': {'name': 'ConvTasNet', 'stride': 8}})\n"
            "assert issubclass(f.CheckpointError, ValueError) and cfg.stride == 8\n"
            "try:\n    f.build_reference(cfg)\nexcept ImportError:\n    print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ---------------------------------------------------------------------------------------------
# Checkpoint validation and safe loading


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    torch = need_torch()
    sd, config = fqss.random_checkpoint({**SMALL, **CONFIGS["speech_s2_c2_3src"]}, seed=3, **CALIB)
    folder = tmp_path_factory.mktemp("small")
    torch.save(sd, folder / "checkpoint.pth")
    (folder / "config.json").write_text(json.dumps(config))
    return folder, sd, config


def _save(tmp_path, obj, name="x.pth"):
    torch = need_torch()
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_valid_small_checkpoint_loads(small_ckpt):
    folder, sd, config = small_ckpt
    sd2, cfg = fqss.load_checkpoint(folder / "checkpoint.pth", folder / "config.json")
    assert list(sd2) == list(sd) and cfg == FQSSConfig.from_dict(config)
    assert fqss.load_checkpoint(folder)[1] == cfg  # a folder with checkpoint.pth + config.json


def test_missing_key_is_named(small_ckpt, tmp_path):
    folder, sd, _ = small_ckpt
    bad = dict(sd)
    del bad["masker.TCN.1.shared_block.3.conv1d.weight"]
    with pytest.raises(CheckpointError, match=r"missing key: masker\.TCN\.1\.shared_block\.3\.conv1d\.weight") as e:
        fqss.load_checkpoint(_save(tmp_path, bad), folder / "config.json")
    assert e.value.missing == ["masker.TCN.1.shared_block.3.conv1d.weight"] and not e.value.mismatched


def test_wrong_shape_and_unexpected_keys_are_named(small_ckpt, tmp_path):
    torch = need_torch()
    folder, sd, _ = small_ckpt
    bad = dict(sd)
    bad["masker.TCN.0.res_conv.conv1d.bias"] = torch.zeros(17)
    bad["masker.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as e:
        fqss.load_checkpoint(_save(tmp_path, bad), folder / "config.json")
    msg = str(e.value)
    assert "wrong shape: masker.TCN.0.res_conv.conv1d.bias: expected [16], found [17]" in msg
    assert "unexpected key: masker.extra.weight" in msg
    assert e.value.unexpected == ["masker.extra.weight"]


def test_config_contradicting_shapes_is_reported(small_ckpt, tmp_path):
    folder, _, config = small_ckpt
    config = json.loads(json.dumps(config))
    config["architecture"]["n_filters"] = 64
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="n_filters: the config says 64 but the checkpoint shapes say 32") as e:
        fqss.load_checkpoint(folder / "checkpoint.pth", tmp_path / "c.json")
    assert ("encoder.conv1d.weight", (64, 2, 8), (32, 2, 8)) in e.value.mismatched


def test_bad_values_are_reported(small_ckpt, tmp_path):
    torch = need_torch()
    folder, sd, _ = small_ckpt
    bad = dict(sd)
    bad["mul.activation_fake_quantize.min_range"] = torch.tensor([5.0])
    bad["decoder.convTr1d.weight"] = sd["decoder.convTr1d.weight"].double()
    with pytest.raises(CheckpointError) as e:
        fqss.load_checkpoint(_save(tmp_path, bad), folder / "config.json")
    assert "mul.activation_fake_quantize.min_range: min_range > max_range" in str(e.value)
    assert "decoder.convTr1d.weight: dtype torch.float64" in str(e.value)


def test_truncated_file(small_ckpt, tmp_path):
    folder, _, _ = small_ckpt
    data = (folder / "checkpoint.pth").read_bytes()
    for cut in (len(data) // 2, 100, 0):
        (tmp_path / "t.pth").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a readable weights-only torch checkpoint"):
            fqss.load_checkpoint(tmp_path / "t.pth", folder / "config.json")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        fqss.load_checkpoint(tmp_path / "absent.pth")


class _Evil:
    """Unpickling this calls os.mkdir(marker): the side effect a safe loader must not run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickles_do_not_run(tmp_path):
    torch = need_torch()
    marker = tmp_path / "pwned"
    (tmp_path / "raw.pth").write_bytes(pickle.dumps({"encoder.conv1d.weight": _Evil(marker)}))
    torch.save({"w": torch.zeros(1), "x": _Evil(marker)}, tmp_path / "zip.pth")
    for name in ("raw.pth", "zip.pth"):
        with pytest.raises(CheckpointError, match="not a readable weights-only"):
            fqss.load_checkpoint(tmp_path / name)
        assert not marker.exists()
    pickle.loads(pickle.dumps(_Evil(marker)))  # the payload is live: unsafe unpickling would run it
    assert marker.exists()


def test_non_state_dict_pickles(tmp_path, small_ckpt):
    torch = need_torch()
    _, sd, _ = small_ckpt
    cases = {"list.pth": [torch.zeros(1)], "wrapped.pth": {"state_dict": sd, "epoch": 3},
             "ints.pth": {"a": torch.zeros(1), "b": 1}, "tensor.pth": torch.zeros(3)}
    for name, obj in cases.items():
        with pytest.raises(CheckpointError, match="plain state_dict") as e:
            fqss.load_checkpoint(_save(tmp_path, obj, name))
        if name == "wrapped.pth":
            assert "wrapped training checkpoint" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Random checkpoints of several configurations


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_checkpoint_build_save_load_forward(name, tmp_path):
    torch = need_torch()
    kw = {**SMALL, **CONFIGS[name]}
    sd, config = fqss.random_checkpoint(kw, seed=7, **CALIB)
    cfg = FQSSConfig.from_dict(config)
    assert cfg == FQSSConfig.create(**kw)
    assert list(sd) == list(config["state_dict_keys"]) == list(fqss.expected_shapes(cfg))
    assert config["n_state_dict_keys"] == len(sd) and config["observer_forward_passes"] == 3
    # calibration moved every range away from its (-0.5, 0.5) init
    assert all(float(v.flatten()[0]) != -0.5 for k, v in sd.items() if k.endswith("min_range"))
    torch.save(sd, tmp_path / "checkpoint.pth")
    (tmp_path / "config.json").write_text(json.dumps(config))
    sd2, cfg2 = fqss.load_checkpoint(tmp_path / "checkpoint.pth", tmp_path / "config.json")
    assert cfg2 == cfg and all(torch.equal(sd[k], sd2[k]) for k in sd)
    model = fqss.load_reference(tmp_path / "checkpoint.pth", tmp_path / "config.json")
    x = 0.1 * torch.randn(config["input_shape"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    assert list(y.shape) == config["output_shape"]
    expect = [1, cfg.n_src] + ([cfg.audio_channels] if cfg.audio_channels > 1 else []) + [1000]
    assert list(y.shape) == expect and bool(torch.isfinite(y).all())
    assert len(torch.unique(y)) > 20  # a non-degenerate output (n_combiner 1: one 8-bit grid)


def test_random_checkpoint_is_deterministic():
    torch = need_torch()
    state = torch.random.get_rng_state()
    a, ca = fqss.random_checkpoint({**SMALL, "model": "ConvTasNetMusicQ"}, seed=5, **CALIB)
    b, cb = fqss.random_checkpoint({**SMALL, "model": "ConvTasNetMusicQ"}, seed=5, **CALIB)
    c, _ = fqss.random_checkpoint({**SMALL, "model": "ConvTasNetMusicQ"}, seed=6, **CALIB)
    assert ca == cb and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.0.conv1d.weight"], c["encoder.0.conv1d.weight"])
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


# ---------------------------------------------------------------------------------------------
# Quantizer, splitter, combiner and OLA math (SPEC §1.1, §1.2, §2.5, §2.6)


def test_weight_quantizer_grid():
    torch = need_torch()
    from intsim.converters.fqss.quant import WeightFakeQuantize
    w = torch.tensor([[[-2.0, -1.0, 0.5, 2.0]], [[-0.3, 0.1, 0.2, 0.25]]])
    q = WeightFakeQuantize(w.shape, axis=0)
    q.observer = True
    assert torch.equal(q(w), w) and not q.observer  # first call observes, returns W unquantized
    assert q.min_range.flatten().tolist() == [-2.0, pytest.approx(-0.3)]
    codes = q.codes(w).detach()
    lo, hi = q.min_range.detach().numpy(), q.max_range.detach().numpy()
    d = np.float32(2) * np.maximum(np.abs(lo), np.abs(hi)) / np.float32(255)
    np.testing.assert_array_equal(codes.numpy(), np.clip(np.round(w.numpy() / d), -128, 127))
    # A/d = 127.5 up to float rounding: +A clips to 127, -A gives -128 (half-even) or -127
    assert codes[0, 0, 1:].tolist() == [-64, 32, 127] and codes[0, 0, 0] in (-128, -127)
    assert torch.equal(q(w), (torch.from_numpy(d) * codes))


def test_activation_quantizer_op_order_and_observer():
    torch = need_torch()
    from intsim.converters.fqss.quant import ActivationFakeQuantize
    q = ActivationFakeQuantize()
    q.observer = True
    x = torch.tensor([-1.0, 3.0])
    assert torch.equal(q(x), x)  # observing passes data through
    assert q.min_range.item() == pytest.approx(0.9 * -0.5 + 0.1 * -1.0)
    assert q.max_range.item() == pytest.approx(0.9 * 0.5 + 0.1 * 3.0)
    q.observer = False
    x = torch.randn(1000) * 2
    mn, mx = q.min_range.detach(), q.max_range.detach()
    s = (mx - mn) / 255
    a = torch.clamp(torch.round((x - mn) / s), 0, 255)
    assert torch.equal(q(x), s * a + mn) and torch.equal(q.codes(x), a)
    assert float(a.min()) == 0 and float(a.max()) == 255


def test_splitter_is_the_hi_lo_byte_split():
    torch = need_torch()
    from intsim.converters.fqss.quant import preprocess
    torch.manual_seed(11)
    x = torch.rand(1, 20000) * 2 - 1
    x[0, :3] = torch.tensor([1.0, -1.0, 0.0])
    out = preprocess(x, 2, normalize=True)
    assert out.shape == (1, 2, 20000)
    u = torch.clamp(torch.floor(x / x.abs().max() * 32768), -32768, 32767).long()
    assert torch.equal(out[:, 0] * 128, (u >> 8).float())
    assert torch.equal(out[:, 1] * 128, ((u & 255) - 128).float())
    assert torch.equal(preprocess(x, 1), x.unsqueeze(1))  # n_splitter 1: no normalization
    stereo = 0.3 * torch.randn(2, 2, 500)  # music: dynamic delta = max|x|/128, channel j*C + c
    out = preprocess(stereo, 2, normalize=False)
    delta = stereo.abs().max() / 128
    assert out.shape == (2, 4, 500)
    k = out / delta  # integer codes up to the float error of dividing by a non-power-of-2 delta
    assert float((k - torch.round(k)).abs().max()) < 1e-4 and -128 <= float(k.min()) <= float(k.max()) <= 127
    assert torch.equal(out[:, :2], torch.clamp(torch.floor(stereo / delta), -128, 127) * delta)


def test_combiner_and_overlap_add():
    torch = need_torch()
    from intsim.converters.fqss.quant import overlap_and_add, postprocess
    x = torch.randn(2, 3, 2, 1, 50)
    assert torch.equal(postprocess(x, 2), (x[0] + x[1] / 256).squeeze(-2))
    assert postprocess(torch.randn(2, 1, 4, 2, 50), 2).shape == (1, 4, 2, 50)  # stereo kept
    assert torch.equal(postprocess(x[:1], 1), x[0].squeeze(-2))
    for width, hop in ((20, 10), (8, 4), (6, 4), (5, 5)):
        frames = torch.randn(2, 7, width, dtype=torch.float64)
        ref = torch.zeros(2, 6 * hop + width, dtype=torch.float64)
        for k in range(7):
            ref[:, k * hop:k * hop + width] += frames[:, k]
        assert torch.equal(overlap_and_add(frames, hop), ref)
