"""FQSS -> intsim conversion: structure, metadata, report, model files, bad inputs, and the op
extensions the converter relies on (conv1d's sign-dependent requantization, mul's fractional zero
points).  Numerical parity with the QAT model is in ``test_parity.py``."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the FQSS converter reads torch checkpoints")

import intsim  # noqa: E402
from intsim import modelfile  # noqa: E402
from intsim.converters.fqss import CheckpointError, random_checkpoint  # noqa: E402
from intsim.converters.fqss.convert import CONVERTER_VERSION, ConversionError, convert_fqss  # noqa: E402
from intsim.converters.fqss.convert_layers import Grid, choose_combiner_zero_points, make_grid, weight_codes  # noqa: E402
from intsim.converters.fqss.graph_builder import GraphBuilder  # noqa: E402
from intsim.ir import Graph, Node, Quant, TensorSpec  # noqa: E402
from intsim.kernels.fixedpoint import requant_params  # noqa: E402
from intsim.ops import OpError  # noqa: E402
from intsim.quantize import mul_params  # noqa: E402
from intsim.fixedpoint import quantize_multiplier  # noqa: E402
from tests.reference.requant import requantize_output as ref_requantize_output  # noqa: E402

TINY = dict(model="ConvTasNetQ", n_filters=16, bn_chan=8, hid_chan=16, n_blocks=2, n_repeats=1, kernel_size=8,
            stride=4)
CALIB = dict(calib_passes=2, calib_samples=800)


def save_checkpoint(tmp_path, state_dict, config, name="ckpt"):
    ckpt = tmp_path / f"{name}.pth"
    torch.save(state_dict, ckpt)
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps(config))
    return ckpt, cfg


@pytest.fixture(scope="module")
def shared_model(shared_dir):
    d = shared_dir / "fqss" / "convtasnet_random"
    if not (d / "checkpoint.pth").is_file():
        pytest.skip(f"shared FQSS checkpoint not found in {d}")
    graph, report = convert_fqss(d / "checkpoint.pth", d / "config.json")
    return d, graph, report


# ---------------------------------------------------------------------------------------------
# The shared checkpoint


def test_shared_checkpoint_converts_saves_loads_and_runs(shared_model, tmp_path):
    d, graph, report = shared_model
    path = tmp_path / "convtasnet.npz"
    modelfile.save(graph, path)
    model = intsim.load(path)
    io = np.load(d / "io.npz")
    out = model.run(io["input"])[model.outputs[0]]
    assert out.shape == io["output"].shape == (1, 2, 8000)
    assert out.dtype == np.int32
    meta = model.metadata
    assert meta["sample_rate"] == 8000
    assert meta["stems"] == ["s1", "s2"]
    assert meta["source_checkpoint_sha256"] == hashlib.sha256((d / "checkpoint.pth").read_bytes()).hexdigest()
    assert meta["converter"] == CONVERTER_VERSION
    assert (meta["n_splitter"], meta["n_combiner"]) == (2, 2)
    assert meta["fqss_config"]["model_cfg"]["stride"] == 8
    assert meta["offset_mode"] == "nudged"
    # every node's op exists and every constant survived the round trip
    assert len(model.graph.nodes) == len(graph.nodes)
    for name, data in graph.constants.items():
        assert np.array_equal(model.graph.constants[name], data), name


def test_shared_report_lists_grids_and_float_ops(shared_model):
    _, graph, report = shared_model
    assert len(report.tensors) == 201  # 200 FQSS activation quantizers + the splitter codes
    assert all(t.offset_lsb <= 0.5 + 1e-6 for t in report.tensors)  # no quantizer range clips its zero
    assert 0.2 < report.offset_lsb_mean < 0.3 and report.offset_lsb_max <= 0.5
    assert all(-128 <= t.zero_point <= 127 and -128 <= t.nudged_zero_point <= 127 for t in report.tensors)
    wheres = " ".join(f.where for f in report.float_ops)
    for what in ("splitter", "PReLU before Q", "GroupNorm", "mask_net.0", "AddQ", "mul", "decoder",
                 "residual_error_block", "combiner"):
        assert what in wheres
    assert max(abs(v) for v in report.residual_offsets.values()) < 1e-4
    text = report.format()
    assert "nudged zero point" in text and "combiner" in text and report.sha256 in text
    assert json.dumps(report.to_dict())  # JSON-serialisable for the CLI
    # the quantizer -> tensor map used by the parity tools
    keys = set(graph.metadata["fqss_tensors"].values())
    assert "masker.TCN.23.add.activation_fake_quantize" in keys
    assert "decoder.activation_fake_quantize_residual" in keys


def test_exact_offset_mode_splits_padded_convs(shared_model):
    d, nudged, _ = shared_model
    graph, report = convert_fqss(d / "checkpoint.pth", d / "config.json", exact_offsets=True)
    assert graph.metadata["offset_mode"] == "exact"
    assert graph.metadata["min_frames"] == 2 * 128 + 1
    concat = [n for n in graph.nodes if n.op == "concat"]
    assert len(concat) == 24 + 2  # the depthwise convs and the two decoder phase convs
    assert len(graph.nodes) > len(nudged.nodes)


def test_grid_reproduces_fqss_codes_and_reals():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lo = np.float32(rng.uniform(-3, 0.5))
        hi = np.float32(lo + rng.uniform(0.01, 4))
        sd = {"q.min_range": np.array([lo], np.float32), "q.max_range": np.array([hi], np.float32)}
        g = make_grid(sd, "q")
        assert -128 <= g.zero_point <= 127
        if lo <= 0 <= hi:
            assert abs(g.offset) <= g.scale / 2 + 1e-12
        a = np.arange(256, dtype=np.float64)
        fqss_real = np.float64(np.float32(g.scale)) * a + float(lo)
        ours = g.scale * ((a - 128) - g.zero_point) + g.offset
        assert np.allclose(ours, fqss_real, rtol=0, atol=1e-9)
        k = int(rng.integers(-5, 6))
        shifted = g.shifted(k)
        assert np.allclose(shifted.scale * ((a - 128) - shifted.zero_point) + shifted.offset, fqss_real, atol=1e-9)


def test_weight_codes_match_fqss_quantizer():
    from intsim.converters.fqss.quant import weight_codes as torch_codes

    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 5)).astype(np.float32)
    mn = w.min(axis=(1, 2), keepdims=True)
    mx = w.max(axis=(1, 2), keepdims=True)
    codes, d = weight_codes(w, mn, mx)
    ref = torch_codes(torch.from_numpy(w), torch.from_numpy(mn), torch.from_numpy(mx)).numpy()
    assert np.array_equal(codes, ref.astype(np.int8))
    assert d.dtype == np.float32


def test_combiner_zero_points_cancel_the_constant():
    rng = np.random.default_rng(2)

    def grid(key, s):
        z = int(rng.integers(-20, 20))
        return Grid(key, s, 0.0, 0.0, z, float(rng.uniform(-0.5, 0.5)) * s)

    for _ in range(5):
        # FQSS trains y1 ~ 256 * (y - y0), |y - y0| <= s0/2: the two scales are alike
        s0 = float(np.float32(rng.uniform(0.005, 0.05)))
        g0, g1 = grid("y0", s0), grid("y1", float(np.float32(s0 * rng.uniform(0.7, 1.3))))
        k0, k1, dc = choose_combiner_zero_points(g0, g1)
        assert -128 <= g0.zero_point + k0 <= 127 and -128 <= g1.zero_point + k1 <= 127
        assert dc == pytest.approx(g0.shifted(k0).offset + g1.shifted(k1).offset / 256, abs=1e-15)
        assert abs(dc) < 0.01 * s0  # 1% of an output LSB of y0


def test_graph_builder_names_and_validation():
    gb = GraphBuilder()
    x = gb.input("x", "int8", [1, 4], quant=(0.5, 0))
    t1 = gb.tensor("y", "int8", [1, 4], quant=(0.5, 0))
    t2 = gb.tensor("y", "int8", [1, 4], quant=(0.5, 0))
    assert t1 == "y" and t2 == "y:1"
    gb.node("reshape", [x], [t1], {"shape": [1, 4]}, name="r")
    n = gb.node("reshape", [t1], [t2], {"shape": [1, 4]}, name="r")
    assert n.name == "r:1"
    gb.tensor("unused", "int8", [1])
    graph = gb.build([t2])
    assert "unused" not in graph.tensors
    assert graph.tensors["y"].quant.zero_point == [0]


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_checkpoint_not_matching_its_config_names_the_keys(shared_dir, tmp_path):
    d = shared_dir / "fqss" / "convtasnet_random"
    if not (d / "checkpoint.pth").is_file():
        pytest.skip(f"shared FQSS checkpoint not found in {d}")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_cfg"]["n_src"] = 3
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        convert_fqss(d / "checkpoint.pth", bad)
    assert "masker.mask_net.1.conv1d.weight" in str(e.value)
    assert "n_src" in str(e.value)


def test_missing_and_extra_keys_are_named(tmp_path):
    state_dict, config = random_checkpoint(TINY, seed=3, **CALIB)
    del state_dict["masker.TCN.1.add.activation_fake_quantize.min_range"]
    state_dict["masker.bogus.weight"] = torch.zeros(3)
    ckpt, cfg = save_checkpoint(tmp_path, state_dict, config)
    with pytest.raises(CheckpointError) as e:
        convert_fqss(ckpt, cfg)
    assert "masker.TCN.1.add.activation_fake_quantize.min_range" in str(e.value)
    assert "masker.bogus.weight" in str(e.value)


def test_unsupported_configurations_raise_conversion_error(tmp_path):
    state_dict, config = random_checkpoint({**TINY, "mask_act": "sigmoid"}, seed=4, **CALIB)
    ckpt, cfg = save_checkpoint(tmp_path, state_dict, config)
    with pytest.raises(ConversionError, match="mask_act"):
        convert_fqss(ckpt, cfg)
    music = dict(model="ConvTasNetMusicQ", n_filters=16, bn_chan=8, hid_chan=16, n_blocks=2, n_repeats=1,
                 kernel_size=8, stride=4, n_splitter=1)  # ConvTasNetMusicQ itself converts (test_convert_music)
    state_dict, config = random_checkpoint(music, seed=5, **CALIB)
    ckpt, cfg = save_checkpoint(tmp_path, state_dict, config, "music")
    with pytest.raises(ConversionError, match="n_splitter = 1"):
        convert_fqss(ckpt, cfg)


def test_collapsed_activation_range_is_a_conversion_error(tmp_path):
    state_dict, config = random_checkpoint(TINY, seed=6, **CALIB)
    key = "masker.TCN.0.add.activation_fake_quantize"
    state_dict[key + ".max_range"] = state_dict[key + ".min_range"].clone()
    ckpt, cfg = save_checkpoint(tmp_path, state_dict, config)
    with pytest.raises(ConversionError, match=key):
        convert_fqss(ckpt, cfg)


# ---------------------------------------------------------------------------------------------
# Op extensions used by the converter


def one_node_graph(op, x_spec, y_spec, consts, attrs, extra_inputs=()):
    tensors = {x_spec.name: x_spec, y_spec.name: y_spec}
    for name, arr in consts.items():
        tensors[name] = TensorSpec(name, arr.dtype.name, list(arr.shape))
    inputs = [x_spec.name, *extra_inputs, *consts]
    graph = Graph(tensors, [Node("n", op, inputs, [y_spec.name], attrs)], [x_spec.name, *extra_inputs],
                  [y_spec.name], dict(consts))
    return graph


@pytest.mark.parametrize("profile", ["tflm", "single", "onnx"])
def test_conv1d_sign_dependent_requantization(profile):
    """conv1d with the 5 optional inputs == requantize_output with neg multiplier and offsets."""
    rng = np.random.default_rng(7)
    c_in, c_out, k, t = 3, 4, 3, 11
    x = rng.integers(-128, 128, (1, c_in, t)).astype(np.int8)
    w = rng.integers(-128, 128, (c_out, c_in, k)).astype(np.int8)
    bias = rng.integers(-3000, 3000, c_out).astype(np.int32)
    reals = rng.uniform(1e-3, 4e-3, c_out)
    slopes = np.array([0.25, -0.1, 0.0, 1.7])
    pairs = [quantize_multiplier(float(r)) for r in reals]
    npairs = [quantize_multiplier(float(r * a)) for r, a in zip(reals, slopes)]
    consts = {
        "w": w, "b": bias,
        "m": np.array([p[0] for p in pairs], np.int32), "s": np.array([p[1] for p in pairs], np.int32),
        "f": reals.astype(np.float32),
        "nm": np.array([p[0] for p in npairs], np.int32), "ns": np.array([p[1] for p in npairs], np.int32),
        "nf": (reals * slopes).astype(np.float32),
        "po": rng.integers(-500, 500, c_out).astype(np.int64), "no": rng.integers(-500, 500, c_out).astype(np.int64),
    }
    zp_x, zp_y = -7, 5
    xs = TensorSpec("x", "int8", [1, c_in, t], Quant([0.1], [zp_x]))
    ys = TensorSpec("y", "int8", [1, c_out, t], Quant([0.2], [zp_y]))
    graph = one_node_graph("conv1d", xs, ys, consts, {"padding": [1, 1]})
    got = intsim.Model(graph, profile=profile).run(x)["y"]
    path = intsim.get_profile(profile).int8
    rq = requant_params(consts["m"], consts["s"], consts["f"], path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, zp_y, -128, 127, consts["nm"], consts["ns"], consts["nf"], consts["po"],
                        consts["no"])
    xp = np.pad(x[0].astype(np.int64) - zp_x, ((0, 0), (1, 1)))
    for co in range(c_out):
        for tt in range(t):
            acc = int(bias[co]) + int(np.sum(w[co].astype(np.int64) * xp[:, tt:tt + k]))
            assert got[0, co, tt] == ref_requantize_output(acc, co, rq)[0]
    # optional inputs may be left out with ""
    g2 = one_node_graph("conv1d", xs, ys, {k_: v for k_, v in consts.items() if k_ not in ("nf", "no")},
                        {"padding": [1, 1]})
    node = g2.nodes[0]
    node.inputs = node.inputs[:8] + ["", "po", ""]
    intsim.Model(g2, profile=profile).run(x)


def test_conv1d_rejects_a_wrong_number_of_inputs():
    xs = TensorSpec("x", "int8", [1, 2, 5], Quant([0.1], [0]))
    ys = TensorSpec("y", "int8", [1, 2, 5], Quant([0.1], [0]))
    consts = {"w": np.ones((2, 2, 1), np.int8), "b": np.zeros(2, np.int32), "m": np.full(2, 2**30, np.int32),
              "s": np.zeros(2, np.int32), "f": np.full(2, 0.5, np.float32), "nm": np.full(2, 2**30, np.int32)}
    with pytest.raises(OpError, match="expects 6 inputs"):
        intsim.Model(one_node_graph("conv1d", xs, ys, consts, {}))


@pytest.mark.parametrize("profile", ["tflm", "onnx"])
def test_mul_fractional_zero_points_match_the_affine_product(profile):
    rng = np.random.default_rng(8)
    a = rng.integers(-128, 128, (2, 3, 50)).astype(np.int8)
    b = rng.integers(-128, 128, (1, 3, 50)).astype(np.int8)
    sa, sb, so = 0.02, 0.03, 0.05
    za, zb, zo = 3, -9, 4
    ca, cb, co = 0.3 * sa, -0.45 * sb, 0.2 * so
    bits = 12
    p = mul_params(sa, sb, so)
    m, sh = quantize_multiplier(float(np.float32(sa)) * float(np.float32(sb)) / float(np.float32(so)) / 2**bits)
    scale = np.float32(np.float32(p.scale[0]) / np.float32(2**bits))
    o = np.rint([2**bits * ca / sa, 2**bits * cb / sb, 2**bits * (ca * cb / (sa * sb) - co / (sa * sb))])
    consts = {"m": np.array([m], np.int32), "s": np.array([sh], np.int32), "f": np.array([scale], np.float32),
              "o": o.astype(np.int32)}
    xa = TensorSpec("a", "int8", [2, 3, 50], Quant([sa], [za]))
    xb = TensorSpec("b", "int8", [1, 3, 50], Quant([sb], [zb]))
    ys = TensorSpec("y", "int8", [2, 3, 50], Quant([so], [zo]))
    graph = Graph({"a": xa, "b": xb, "y": ys, **{k: TensorSpec(k, v.dtype.name, list(v.shape)) for k, v in consts.items()}},
                  [Node("n", "mul", ["a", "b", "m", "s", "f", "o"], ["y"], {"offset_bits": bits})], ["a", "b"], ["y"],
                  dict(consts))
    got = intsim.Model(graph, profile=profile).run({"a": a, "b": b})["y"].astype(np.int64)
    real = (sa * (a.astype(np.float64) - za) + ca) * (sb * (b.astype(np.float64) - zb) + cb)
    want = np.clip(np.rint((real - co) / so) + zo, -128, 127)
    assert np.mean(got != want) < 0.002 and np.max(np.abs(got - want)) <= 1
    # bits 0 and zero offsets are plain TFLite MUL
    path = intsim.get_profile(profile).int8
    rq = requant_params(p.multiplier, p.shift, p.scale, path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, zo, -128, 127)
    consts0 = {"m": p.multiplier, "s": p.shift, "f": p.scale, "o": np.zeros(3, np.int32)}
    g0 = Graph({"a": xa, "b": xb, "y": ys, **{k: TensorSpec(k, v.dtype.name, list(v.shape)) for k, v in consts0.items()}},
               [Node("n", "mul", ["a", "b", "m", "s", "f", "o"], ["y"], {"offset_bits": 0})], ["a", "b"], ["y"],
               dict(consts0))
    got0 = intsim.Model(g0, profile=profile).run({"a": a, "b": b})["y"]
    A, B = np.broadcast_arrays(a, b)
    want0 = [ref_requantize_output((int(u) - za) * (int(v) - zb), 0, rq)[0] for u, v in zip(A.ravel(), B.ravel())]
    assert got0.ravel().tolist() == want0


def test_mul_offsets_need_offset_bits():
    xa = TensorSpec("a", "int8", [4], Quant([0.1], [0]))
    ys = TensorSpec("y", "int8", [4], Quant([0.1], [0]))
    consts = {"m": np.array([2**30], np.int32), "s": np.array([0], np.int32), "f": np.array([0.5], np.float32),
              "o": np.zeros(3, np.int32)}
    tensors = {"a": xa, "b": TensorSpec("b", "int8", [4], Quant([0.1], [0])), "y": ys,
               **{k: TensorSpec(k, v.dtype.name, list(v.shape)) for k, v in consts.items()}}
    g = Graph(tensors, [Node("n", "mul", ["a", "b", "m", "s", "f", "o"], ["y"], {})], ["a", "b"], ["y"], dict(consts))
    with pytest.raises(OpError, match="offset_bits"):
        intsim.Model(g)
    g.nodes[0].attrs["offset_bits"] = 15
    with pytest.raises(OpError, match="offset_bits"):
        intsim.Model(g)


@pytest.mark.parametrize("profile", ["tflm", "single", "onnx"])
def test_add_with_constant_offset(profile):
    """add's optional 'offset' input: the constant c_a + c_b - c_out in 2*max(s)*2^-20 units."""
    from intsim.quantize import add_params

    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (3, 400)).astype(np.int8)
    b = rng.integers(-128, 128, (3, 400)).astype(np.int8)
    sa, sb, so = 0.021, 0.013, 0.037
    za, zb, zo = 4, -11, 2
    const = 0.43 * so  # c_a + c_b - c_out
    p = add_params(sa, sb, so)
    unit = 2 * max(float(np.float32(sa)), float(np.float32(sb))) * 2.0**-p.left_shift
    consts = {"m": p.multiplier, "s": p.shift, "f": p.scale, "o": np.array([round(const / unit)], np.int32)}

    def graph(names):
        specs = {"a": TensorSpec("a", "int8", [3, 400], Quant([sa], [za])),
                 "b": TensorSpec("b", "int8", [3, 400], Quant([sb], [zb])),
                 "y": TensorSpec("y", "int8", [3, 400], Quant([so], [zo]))}
        specs.update({k: TensorSpec(k, v.dtype.name, list(v.shape)) for k, v in consts.items()})
        return Graph(specs, [Node("n", "add", ["a", "b", *names], ["y"], {"left_shift": p.left_shift})], ["a", "b"],
                     ["y"], {k: consts[k] for k in names})

    got = intsim.Model(graph(["m", "s", "f", "o"]), profile=profile).run({"a": a, "b": b})["y"].astype(np.int64)
    real = sa * (a.astype(np.float64) - za) + sb * (b.astype(np.float64) - zb) + const
    want = np.clip(np.rint(real / so) + zo, -128, 127)
    assert np.mean(got != want) < 0.003 and np.max(np.abs(got - want)) <= 1
    plain = intsim.Model(graph(["m", "s", "f"]), profile=profile).run({"a": a, "b": b})["y"]
    consts["o"] = np.zeros(1, np.int32)
    zero = intsim.Model(graph(["m", "s", "f", "o"]), profile=profile).run({"a": a, "b": b})["y"]
    assert np.array_equal(plain, zero)  # offset 0 is TFLite ADD, bit for bit
    assert np.mean(plain.astype(np.int64) != got) > 0.2  # and the offset matters
