#!/usr/bin/env python
"""Train a small FQSS ConvTasNetQ end to end on real speech: float pretraining -> QAT (FQSS or vanilla).

Phases (``intsim.converters.fqss.train``):

1. ``float``: the FQSS float model (plain ConvTasNet, no splitter/combiner), PIT SI-SDR loss;
2. ``qat``: FQSS ``quantize_model`` from the best float checkpoint (split encoder, residual
   quantization block, observer calibration on 50 training batches), then QAT with the SAKD loss
   (``--qat-mode fqss``, lambda 0.1, teacher = the float model) or the plain PIT loss (``vanilla``).

Data: on-the-fly 2-speaker 8 kHz mixtures from ``--corpus`` (``benchmarks/data/build_corpus.py``),
train split; validation SI-SDRi every ``--eval-every`` steps on fixed mixtures of the LibriSpeech
valid speakers (test-other, speaker-disjoint from training); LibriSpeech test speakers at the end
of each phase. ``--toy`` uses synthetic tone "speakers" instead (for tests and smoke runs).

Outputs in ``--out``: ``log.txt`` (human-readable), ``history.jsonl`` (one JSON object per log /
eval event), ``state.pt`` (resume state, rewritten every ``--ckpt-every`` steps: run the same
command again to resume), ``float/{model,best_model}.pth`` + ``config.json`` and
``qat/{model,best_model}.pth`` + ``config.json``: FQSS-layout state_dicts that
``intsim.converters.fqss.load_checkpoint`` reads.

Example (the run described in docs/training.md)::

    nohup python benchmarks/train_small.py --corpus /work/data/corpus8k/manifest.csv \\
        --out /work/runs/small_v1 > /work/runs/small_v1.nohup 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from intsim.converters.fqss.config import FQSSConfig
from intsim.converters.fqss import data as D
from intsim.converters.fqss import train as T


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/data/corpus8k/manifest.csv"))
    ap.add_argument("--toy", action="store_true", help="synthetic tone speakers instead of --corpus")
    ap.add_argument("--out", type=Path, required=True)
    m = ap.add_argument_group("model (FQSS ConvTasNetQ, 8 kHz, 2 speakers)")
    m.add_argument("--n-filters", type=int, default=128)
    m.add_argument("--kernel-size", type=int, default=16)
    m.add_argument("--stride", type=int, default=8)
    m.add_argument("--bn-chan", type=int, default=64)
    m.add_argument("--hid-chan", type=int, default=128)
    m.add_argument("--conv-kernel", type=int, default=3)
    m.add_argument("--n-blocks", type=int, default=6)
    m.add_argument("--n-repeats", type=int, default=2)
    t = ap.add_argument_group("training")
    t.add_argument("--float-steps", type=int, default=2000)
    t.add_argument("--qat-steps", type=int, default=600)
    t.add_argument("--qat-mode", choices=("fqss", "vanilla"), default="fqss")
    t.add_argument("--batch-size", type=int, default=6)
    t.add_argument("--segment-s", type=float, default=2.0)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--qat-lr", type=float, default=2e-4)
    t.add_argument("--kd-lambda", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--libri-fraction", type=float, default=0.7,
                   help="share of training speakers drawn from LibriSpeech (rest: Debian sources)")
    t.add_argument("--calib-batches", type=int, default=50)
    t.add_argument("--split-init", choices=("scaled", "fqss"), default="scaled",
                   help="encoder init of the splitter's low-byte stage at quantization (see quantize_from_float)")
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--ckpt-every", type=int, default=250)
    t.add_argument("--log-every", type=int, default=25)
    t.add_argument("--n-valid", type=int, default=40)
    t.add_argument("--valid-s", type=float, default=4.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a shared 2-core machine (OpenMP spin-waits)")
    return ap.parse_args(argv)


class Run:
    def __init__(self, args):
        self.args = a = args
        a.out.mkdir(parents=True, exist_ok=True)
        self.log_f = open(a.out / "log.txt", "a")
        self.hist_f = open(a.out / "history.jsonl", "a")
        self.cfg = FQSSConfig.create("ConvTasNetQ", n_filters=a.n_filters, kernel_size=a.kernel_size,
                                     stride=a.stride, bn_chan=a.bn_chan, hid_chan=a.hid_chan,
                                     conv_kernel=a.conv_kernel, n_blocks=a.n_blocks, n_repeats=a.n_repeats)
        seg = int(round(a.segment_s * D.SAMPLE_RATE)) // a.stride * a.stride
        vseg = int(round(a.valid_s * D.SAMPLE_RATE)) // a.stride * a.stride
        t0 = time.time()
        if a.toy:
            train_pool, valid_pool, test_pool = D.toy_pool(6, seed=0), D.toy_pool(4, seed=1), D.toy_pool(4, seed=2)
            p = None
        else:
            rows = D.read_manifest(a.corpus)
            train_pool = D.load_split(rows, "train")
            valid_pool = D.load_split(rows, "valid", sources=["librispeech-test-other"])
            test_pool = D.load_split(rows, "test", sources=["librispeech-test-other"])
            p = D.group_weights(train_pool, "librispeech", a.libri_fraction)
        self.sampler = D.MixtureSampler(train_pool, seg, speaker_p=p)
        self.valid = D.fixed_mixtures(valid_pool, a.n_valid, vseg, seed=1234)
        self.test = D.fixed_mixtures(test_pool, a.n_valid, vseg, seed=4321)
        self.log(f"data: train {train_pool.n_speakers} speakers {train_pool.seconds() / 60:.1f} min, "
                 f"valid {valid_pool.n_speakers} spk, test {test_pool.n_speakers} spk; "
                 f"segment {seg} samples, batch {a.batch_size}; loaded in {time.time() - t0:.1f} s")

    # ---------------------------------------------------------------- logging
    def log(self, msg: str, **event):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log_f.write(line + "\n")
        self.log_f.flush()
        if event:
            self.hist_f.write(json.dumps({"time": time.time(), **event}) + "\n")
            self.hist_f.flush()

    def next_batch(self, rng):
        return self.sampler.batch(self.args.batch_size, rng)

    # ---------------------------------------------------------------- phases
    def trainer(self, phase, model, teacher=None):
        a = self.args
        steps, lr = (a.float_steps, a.lr) if phase == "float" else (a.qat_steps, a.qat_lr)
        tc = T.TrainConfig(phase=phase, steps=steps, batch_size=a.batch_size, lr=lr,
                           warmup=a.warmup if phase == "float" else min(a.warmup, steps // 10),
                           kd_lambda=a.kd_lambda, eval_every=a.eval_every, ckpt_every=a.ckpt_every,
                           seed=a.seed + (0 if phase == "float" else 1))
        return T.Trainer(model, tc, self.next_batch, teacher)

    def float_model(self):
        return T.build_float_model(self.cfg, seed=self.args.seed)

    def qat_model_shell(self):
        return T.make_trainable(T.build_reference(self.cfg), quantize=True).train()

    def run_phase(self, name, tr: T.Trainer, save_dir: Path, save_cfg: FQSSConfig, state_extra: dict):
        a = self.args
        best = max([h["si_sdri"] for h in tr.history if "si_sdri" in h], default=-1e9)
        window, t_start, n_start = [], time.time(), tr.step
        audio_per_step = a.batch_size * self.sampler.segment / D.SAMPLE_RATE

        def on_step(trn, loss, dt):
            window.append((loss, dt))
            if trn.step % a.log_every == 0 or trn.step == trn.tc.steps:
                ls, ts = zip(*window)
                window.clear()
                el = time.time() - t_start
                rate = (trn.step - n_start) / max(el, 1e-9)
                eta = (trn.tc.steps - trn.step) / max(rate, 1e-9)
                done = int(30 * trn.step / trn.tc.steps)
                self.log(f"{name} [{'#' * done}{'.' * (30 - done)}] {trn.step}/{trn.tc.steps} "
                         f"loss {np.mean(ls):7.3f}  {1 / np.mean(ts):.2f} steps/s "
                         f"({audio_per_step / np.mean(ts):.1f} s audio/s)  lr {trn.tc.lr_at(trn.step):.2e}  "
                         f"eta {eta / 60:.1f} min",
                         phase=name, step=trn.step, loss=float(np.mean(ls)), steps_per_s=float(1 / np.mean(ts)),
                         audio_s_per_s=float(audio_per_step / np.mean(ts)))

        def on_eval(trn):
            nonlocal best
            t = time.time()
            r = T.evaluate(trn.model, *self.valid)
            trn.history.append({"step": trn.step, **r})
            if r["si_sdri"] > best:
                best = r["si_sdri"]
                T.save_fqss_checkpoint(trn.model, save_cfg, save_dir / "best_model.pth",
                                       extra={"train": {"phase": name, "step": trn.step, "valid": r}})
            self.log(f"{name} eval step {trn.step}: valid SI-SDRi {r['si_sdri']:.2f} dB "
                     f"(median {r['si_sdri_median']:.2f}, SI-SDR {r['si_sdr']:.2f}; best {best:.2f}) "
                     f"[{time.time() - t:.1f} s]", phase=name, eval="valid", step=trn.step, **r)

        def on_ckpt(trn):
            T.save_fqss_checkpoint(trn.model, save_cfg, save_dir / "model.pth",
                                   extra={"train": {"phase": name, "step": trn.step}})
            st = {"phase": name, "trainer": trn.state(), **state_extra}
            torch.save(st, a.out / "state.pt.tmp")
            (a.out / "state.pt.tmp").replace(a.out / "state.pt")

        if tr.step == 0:
            on_eval(tr)
        tr.run(on_step, on_eval, on_ckpt)
        best_sd = torch.load(save_dir / "best_model.pth", weights_only=True)
        tr.model.load_state_dict(best_sd)
        r = T.evaluate(tr.model, *self.test)
        self.log(f"{name} done: best valid SI-SDRi {best:.2f} dB; LibriSpeech test SI-SDRi "
                 f"{r['si_sdri']:.2f} dB (SI-SDR {r['si_sdr']:.2f})", phase=name, eval="test", **r)
        return tr.model

    def main(self):
        a = self.args
        torch.set_num_threads(a.threads)
        st = torch.load(a.out / "state.pt", weights_only=False) if (a.out / "state.pt").exists() else None
        if st:
            self.log(f"resuming: phase {st['phase']} step {st['trainer']['step']}")
        (a.out / "args.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                     for k, v in vars(a).items()}, indent=1))
        fcfg = T.float_config(self.cfg)
        # ---- phase 1: float
        fmodel = self.float_model()
        n_params = sum(p.numel() for p in fmodel.parameters())
        if st is None or st["phase"] == "float":
            self.log(f"float model: {n_params} parameters; config {self.cfg}")
            tr = self.trainer("float", fmodel)
            if st:
                tr.load_state(st["trainer"])
            fmodel = self.run_phase("float", tr, a.out / "float", fcfg, {})
            st = None
        else:
            fmodel.load_state_dict(torch.load(a.out / "float/best_model.pth", weights_only=True))
        # ---- phase 2: QAT
        fmodel.eval()
        if st is None:
            crng = np.random.default_rng(a.seed + 7)
            calib = [torch.from_numpy(self.next_batch(crng)[0]) for _ in range(a.calib_batches)]
            qmodel = T.quantize_from_float(fmodel, self.cfg, calib, seed=a.seed, split_init=a.split_init)
            rf = T.evaluate(fmodel, *self.valid)
            self.log(f"QAT init ({a.qat_mode}, split init {a.split_init}): float teacher valid SI-SDRi "
                     f"{rf['si_sdri']:.2f} dB",
                     phase="qat", eval="teacher", **rf)
        else:
            qmodel = self.qat_model_shell()
        tr = self.trainer(a.qat_mode, qmodel, teacher=fmodel if a.qat_mode == "fqss" else None)
        if st:
            tr.load_state(st["trainer"])
        self.run_phase("qat", tr, a.out / "qat", self.cfg, {})
        self.log(f"finished; checkpoints in {a.out / 'qat'} and {a.out / 'float'}")
        return 0


def main(argv=None) -> int:
    return Run(parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
