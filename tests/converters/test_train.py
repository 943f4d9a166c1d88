"""Training code for FQSS ConvTasNetQ (converters/fqss/train.py, data.py, benchmarks/train_small.py).

Fast (tiny models, synthetic data): STE quantizers keep the reference forward bit for bit, the
SI-SDR / PIT / SAKD losses, loss decrease on a trivially separable problem, FQSS-layout
checkpoints that reload, bit-exact resume, and one end-to-end CLI run (float -> FQSS QAT -> resume).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import intsim.converters.fqss as fqss  # noqa: E402
from intsim.converters.fqss import FQSSConfig  # noqa: E402
from intsim.converters.fqss import data as D  # noqa: E402
from intsim.converters.fqss import train as T  # noqa: E402
from intsim.metrics import si_sdr as np_si_sdr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(n_filters=16, bn_chan=8, hid_chan=16, n_blocks=2, n_repeats=1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(**kw) -> FQSSConfig:
    return FQSSConfig.create("ConvTasNetQ", **{**TINY, **kw})


def tones(batch=4, n=2000, seed=0):
    """Trivially separable mixtures: a low and a high sinusoid with random phases and levels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000
    src = np.stack([np.stack([a * np.sin(2 * np.pi * f * t + p) for f, a, p in
                              zip((220.0, 1800.0), rng.uniform(0.2, 0.5, 2), rng.uniform(0, 6, 2))])
                    for _ in range(batch)]).astype(np.float32)
    return src.sum(1), src


# --------------------------------------------------------------------------------------------
# quantizers and losses


def test_trainable_quantizers_match_reference_forward_bit_for_bit():
    sd, cfg = fqss.random_checkpoint(tiny_cfg(), seed=3)
    ref = fqss.build_reference(cfg)
    ref.load_state_dict(sd)
    trn = T.make_trainable(copy.deepcopy(ref), quantize=True)
    x = 0.3 * torch.randn(2, 1200, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ref(x), trn(x))
    assert list(trn.state_dict()) == list(sd)  # the FQSS key order is untouched


def test_ste_gradients_reach_weights_and_ranges():
    sd, cfg = fqss.random_checkpoint(tiny_cfg(), seed=0)
    model = T.make_trainable(fqss.build_reference(cfg), quantize=True).train()
    model.load_state_dict(sd)
    mix, src = tones(2, 1200)
    loss = T.pit_si_sdr_loss(model(torch.from_numpy(mix)), torch.from_numpy(src))
    loss.backward()
    enc = model.encoder
    assert enc.conv1d.weight.grad.abs().sum() > 0
    assert enc.activation_fake_quantize.max_range.grad is not None
    assert enc.weight_fake_quantize.max_range.grad.abs().sum() > 0


def test_float_mode_is_identity_quantization():
    model = T.build_float_model(tiny_cfg(), seed=0)
    assert model.encoder.conv1d.in_channels == 1 and not hasattr(model.decoder, "residual_error_block")
    x = 0.3 * torch.randn(1, 800, generator=torch.Generator().manual_seed(2))
    conv = model.encoder.conv1d
    feats = torch.nn.functional.conv1d(x[:, None], conv.weight, None, conv.stride)
    assert torch.equal(model.encoder(x[:, None]), feats)


def test_pit_si_sdr_matches_numpy_metric_and_is_permutation_invariant():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 2, 500)).astype(np.float32)
    est = (ref + 0.3 * rng.standard_normal(ref.shape)).astype(np.float32)
    pw = T.pairwise_si_sdr(torch.from_numpy(est), torch.from_numpy(ref)).numpy()
    expect = np_si_sdr(reference=ref, estimate=est, zero_mean=True)
    np.testing.assert_allclose(np.diagonal(pw, axis1=1, axis2=2), expect, atol=1e-3)
    a = T.pit_si_sdr(torch.from_numpy(est), torch.from_numpy(ref))
    b = T.pit_si_sdr(torch.from_numpy(est[:, ::-1].copy() * 3), torch.from_numpy(ref))
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_sakd_loss_reduces_to_task_loss_and_has_gradients():
    mix, src = tones(3, 800)
    ref = torch.from_numpy(src)
    g = torch.Generator().manual_seed(0)
    est_f = ref + 0.1 * torch.randn(ref.shape, generator=g)
    est_q = (ref + 0.3 * torch.randn(ref.shape, generator=g)).requires_grad_()
    task = T._best_perm(T.pairwise_si_sdr(est_q, ref, linear=True)).mean()
    torch.testing.assert_close(T.sakd_loss(est_q, est_f, ref, lam=0.0), -10 * torch.log10(task + T.EPS))
    loss = T.sakd_loss(est_q, est_f, ref, lam=0.1)
    loss.backward()
    assert torch.isfinite(loss) and est_q.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# training


def fixed_batch_trainer(phase, model, teacher=None, steps=25, lr=5e-3):
    mix, src = tones(4, 2000)
    tc = T.TrainConfig(phase=phase, steps=steps, lr=lr, warmup=1, lr_min_factor=1.0)
    return T.Trainer(model, tc, lambda rng: (mix, src), teacher)


def test_float_loss_decreases_on_separable_toy_problem():
    tr = fixed_batch_trainer("float", T.build_float_model(tiny_cfg(), seed=0))
    losses = [tr.train_step() for _ in range(25)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 3.0, losses


def test_fqss_qat_loss_decreases_after_quantize_from_float():
    cfg = tiny_cfg()
    fm = T.build_float_model(cfg, seed=0)
    fixed_batch_trainer("float", fm, steps=15).run()
    calib = [torch.from_numpy(tones(2, 2000, seed=s)[0]) for s in range(5)]
    qm = T.quantize_from_float(fm, cfg, calib, seed=0)
    assert qm.encoder.conv1d.weight.shape[1] == 2  # split encoder
    assert torch.equal(qm.encoder.conv1d.weight[:, :1], fm.encoder.conv1d.weight)
    assert torch.equal(qm.encoder.conv1d.weight[:, 1:], fm.encoder.conv1d.weight / 256)
    tr = fixed_batch_trainer("fqss", qm, teacher=fm.eval(), lr=2e-3)
    losses = [tr.train_step() for _ in range(15)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_resume_is_bit_exact(tmp_path):
    pool = D.toy_pool(4, seconds=1.0)
    sampler = D.MixtureSampler(pool, 1200)

    def trainer():
        tc = T.TrainConfig(phase="float", steps=6, batch_size=2, warmup=2, seed=5)
        return T.Trainer(T.build_float_model(tiny_cfg(), seed=1), tc, lambda rng: sampler.batch(2, rng))

    straight = trainer()
    straight.run()
    first = trainer()
    for _ in range(3):
        first.train_step()
    torch.save(first.state(), tmp_path / "state.pt")
    second = trainer()
    second.load_state(torch.load(tmp_path / "state.pt", weights_only=False))
    second.run()
    assert second.step == 6
    for (k, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_scaled_split_init_keeps_the_float_encoder():
    cfg = tiny_cfg()
    fm = T.build_float_model(cfg, seed=0).eval()
    qm = T.quantize_from_float(fm, cfg, [], seed=0)
    for m in qm.modules():
        if isinstance(m, (T.TrainableWeightFakeQuantize, T.TrainableActivationFakeQuantize)):
            m.quantize = False
    fq = T.quantize_from_float(fm, cfg, [], seed=0, split_init="fqss")
    T.make_trainable(fq, quantize=False)
    x = torch.from_numpy(tones(1, 1600)[0])
    with torch.no_grad():
        a = fm.encoder(x[:, None] / x.abs().max())
        split = fqss.convtasnet.preprocess(x, 2)
        err = (qm.encoder(split) - a).norm() / a.norm()
        err_fqss = (fq.encoder(split) - a).norm() / a.norm()
    # only the low byte's +128 offset (a constant 2^-8 per tap) separates the two
    assert err < 0.03 and err_fqss > 10 * err, (err, err_fqss)


def test_checkpoint_reloads_with_load_checkpoint(tmp_path):
    cfg = tiny_cfg()
    fm = T.build_float_model(cfg, seed=0)
    qm = T.quantize_from_float(fm, cfg, [torch.from_numpy(tones(2, 1600)[0])], seed=0)
    T.save_fqss_checkpoint(qm, cfg, tmp_path / "model.pth")
    sd, cfg2 = fqss.load_checkpoint(tmp_path / "model.pth", tmp_path / "config.json")
    assert cfg2 == cfg
    ref = fqss.load_reference(tmp_path / "model.pth", tmp_path / "config.json")
    x = torch.from_numpy(tones(1, 1600)[0])
    with torch.no_grad():
        assert torch.equal(ref(x), qm.eval()(x))


# --------------------------------------------------------------------------------------------
# data


def test_mixture_sampler_is_deterministic_and_consistent():
    pool = D.toy_pool(5, seconds=0.5)  # shorter than the segment: excerpts get concatenated
    mix, src = D.fixed_mixtures(pool, 3, 6000, seed=7)
    mix2, _ = D.fixed_mixtures(pool, 3, 6000, seed=7)
    assert mix.shape == (3, 6000) and src.shape == (3, 2, 6000)
    np.testing.assert_array_equal(mix, mix2)
    np.testing.assert_allclose(mix, src.sum(1), atol=1e-6)
    assert 0.29 <= np.abs(mix).max(1).min() and np.abs(mix).max() <= 0.91
    p = D.group_weights(pool, "toy/0", 0.5)
    assert p[0] == pytest.approx(0.5) and p.sum() == pytest.approx(1.0)


def test_split_rules_are_speaker_disjoint():
    assert D.split_of("librispeech-train-clean-100", "19") == "train"
    assert {D.split_of("librispeech-test-other", s) for s in D.LIBRI_VALID} == {"valid"}
    assert {D.split_of("librispeech-test-other", s) for s in D.LIBRI_TEST} == {"test"}
    assert not D.LIBRI_VALID & D.LIBRI_TEST
    with pytest.raises(ValueError):
        D.split_of("no-such-source", "x")


# --------------------------------------------------------------------------------------------
# end to end


def test_train_small_cli_end_to_end_and_resume(tmp_path):
    spec = importlib.util.spec_from_file_location("train_small", ROOT / "benchmarks" / "train_small.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "run"
    args = ["--toy", "--out", str(out), "--float-steps", "4", "--qat-steps", "3", "--batch-size", "2",
            "--segment-s", "0.25", "--valid-s", "0.25", "--n-valid", "2", "--eval-every", "2",
            "--ckpt-every", "2", "--calib-batches", "3", "--warmup", "2",
            "--n-filters", "16", "--bn-chan", "8", "--hid-chan", "16", "--n-blocks", "2", "--n-repeats", "1"]
    assert mod.main(args) == 0
    for d in ("float", "qat"):
        for f in ("model.pth", "best_model.pth"):
            fqss.load_checkpoint(out / d / f, out / d / "config.json")
    cfg = json.loads((out / "qat" / "config.json").read_text())
    assert cfg["model_cfg"]["quantization"]["n_splitter"] == 2
    assert mod.main(args) == 0  # resumes from state.pt (QAT phase, finished): no retraining
    log = (out / "log.txt").read_text()
    assert "resuming: phase qat step 3" in log
    events = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert any(e.get("eval") == "valid" and e["phase"] == "qat" for e in events)
