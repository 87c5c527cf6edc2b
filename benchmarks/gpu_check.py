"""One-GPU check of every paper preset (run through ``benchmarks/gpu_check.sh``; < 8 minutes on one H100).

For each paper preset that simulates its own data (the-well, generic and generic-fields read a user's file:
skipped), with a small simulated data set (``data.n`` of ``--n-data``; the model, batch size and sample batch
are the preset's):

* training: ``--steps`` steps of :func:`physdiff.training.trainer.train` (the real loop: AdamW, EMA, clipping,
  a checkpoint at the end) after a ``--warmup``-step run; steps/s and peak GPU memory, in fp32 and bf16
  (``train.precision``);
* sampling: one batch of the preset's ``sample.batch_size`` through ``sample_tensors`` with the preset's
  sampler at ``--sample-steps`` steps; samples/s, in fp32 and under bf16 autocast;
* a 1-GPU ``torchrun`` of ``physdiff train`` (nccl on CUDA, gloo on a CPU) on a tiny five-spring data set;
* correctness: the same tiny training run (three-body quick preset, 5 steps, TF32 off) on the CPU and on the
  device: the logged losses and the EMA network's x̂0 on a fixed batch agree to ``--tol`` (relative).

Writes ``--out``/gpu_check.json and ``--out``/gpu_check.md (a markdown table). ``--device cpu --dry`` runs every
step tiny (2 training steps, 2 sampling steps, small grids and networks): the CI test of this script.
Exit status 1 when the correctness check or the torchrun step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from physdiff.experiments.config import SampleConfig, preset_config
from physdiff.experiments.harness import configure, prepare, sample_tensors
from physdiff.presets import experiments, preset_path
from physdiff.training.acceleration import PRECISIONS, accelerated
from physdiff.training.trainer import TrainConfig, train

#: presets that read a user's file (nothing to simulate on a bare machine)
NEEDS_A_FILE = ("the-well", "generic", "generic-fields")
#: data-set size of the check per system (small: the throughput does not depend on it)
N_DATA = {"shallow-water": 12, "darcy": 24}
#: --dry: every step tiny (grids, frames and networks)
DRY_DATA = {
    "advection": ["data.settings.nx=16", "data.settings.nt=8"],
    "burgers": ["data.settings.nx=16", "data.settings.nt=8"],
    "darcy": ["data.settings.n_grid=16"],
    "shallow-water": ["data.settings.nx=8", "data.settings.ny=8", "data.settings.nt=4"],
    "three-body": ["data.settings.n_frames=6", "data.settings.batch_size=64"],
    "five-spring": ["data.settings.n_frames=6"],
    "nbody-spring": ["data.settings.n_frames=12"],  # 10 known frames
    "nbody-charged": ["data.settings.n_frames=12"],
}
DRY_MODEL = {
    "egnn": ["model.hidden=8", "model.layers=1", "model.vector_channels=2", "model.heads=2"],
    "transformer": ["model.hidden=8", "model.layers=1", "model.heads=2"],
    "unet": ["model.base_channels=4", "model.channel_mults=[1,2]", "model.num_res_blocks=1"],
}


def paper_presets() -> list[str]:
    names = [n for n in experiments() if n not in NEEDS_A_FILE]
    return [n for n in names if _has_paper(n)]


def _has_paper(name: str) -> bool:
    try:
        return preset_path(name, "paper").is_file()
    except ValueError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def check_preset(name: str, args: argparse.Namespace, device: torch.device, cache: Path, work: Path) -> dict:
    """Training steps/s, peak memory and sampling samples/s of one paper preset, fp32 and bf16."""
    cfg = preset_config(name, "paper")
    overrides = [f"data.n={N_DATA.get(cfg.data.system, args.n_data) if not args.dry else 12}", "sample.constraints=[]"]
    if args.dry:
        overrides += DRY_DATA.get(name, []) + DRY_MODEL[cfg.model.kind] + ["train.batch_size=4", "sample.batch_size=2"]
    cfg = configure(cfg, overrides)
    t0 = time.perf_counter()
    prep = prepare(cfg, cache, split="val", progress=False)
    task = prep.task
    tensors = task.to_tensors(prep.train, prep.scaling, cfg.subtasks[0])
    evaluation = task.to_tensors(prep.evaluation, prep.scaling, cfg.subtasks[0])
    reps = -(-cfg.sample.batch_size // evaluation["x0"].shape[0])  # the preset's sample batch, rows repeated
    evaluation = {k: v.repeat(reps, *([1] * (v.dim() - 1)))[: cfg.sample.batch_size] for k, v in evaluation.items()}
    n_sample = evaluation["x0"].shape[0]
    row: dict[str, Any] = {
        "preset": f"{name}-paper",
        "model": cfg.model.kind,
        "batch_size": cfg.train.batch_size,
        "x0_shape": list(tensors["x0"].shape[1:]),
        "data_seconds": time.perf_counter() - t0,
    }
    for precision in PRECISIONS:
        torch.manual_seed(0)
        den = task.build_denoiser(prep.scaling, tensors)
        row["parameters"] = sum(p.numel() for p in den.net.parameters())
        base = {**cfg.train.__dict__, "checkpoint_every": 10**9, "log_every": 10**9, "precision": precision}
        train(den, tensors, TrainConfig(**{**base, "steps": args.warmup}), work / f"{name}-{precision}-w",
              device=device, progress=False)  # fmt: skip
        _peak_reset(device)
        _sync(device)
        start = time.perf_counter()
        train(den, tensors, TrainConfig(**{**base, "steps": args.steps}), work / f"{name}-{precision}",
              device=device, progress=False)  # fmt: skip
        _sync(device)
        seconds = time.perf_counter() - start
        row[f"train_steps_per_s_{precision}"] = args.steps / seconds
        row[f"train_peak_mib_{precision}"] = _peak_mib(device)
        scfg = SampleConfig(**{**cfg.sample.__dict__, "steps": args.sample_steps, "batch_size": n_sample})
        fast = accelerated(den.eval(), precision=precision)
        _peak_reset(device)
        _sync(device)
        start = time.perf_counter()
        out = sample_tensors(fast, evaluation, scfg, seed=0, device=device)
        _sync(device)
        seconds = time.perf_counter() - start
        row[f"sample_per_s_{precision}"] = n_sample / seconds
        row[f"sample_peak_mib_{precision}"] = _peak_mib(device)
        row[f"sample_finite_{precision}"] = bool(torch.isfinite(out).all())
    row["sampler"] = f"{cfg.sample.sampler}-{args.sample_steps}, batch {n_sample}"
    return row


def torchrun_check(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    """A 1-process ``torchrun`` of ``physdiff train`` (nccl on CUDA) on a tiny five-spring file."""
    data = work / "springs.h5"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cli = [sys.executable, "-m", "physdiff.cli.main"]
    subprocess.run([*cli, "simulate", "five-spring", "--n", "40", "--frames", "8", "--out", str(data)],
                   check=True, capture_output=True, env=env)  # fmt: skip
    steps = 4 if args.dry else 50
    tiny = ["model.hidden=16", "model.layers=2", "train.batch_size=8", f"train.steps={steps}", "train.log_every=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
           "physdiff.cli.main", "train", "five-spring", "--device", device.type, "--data", str(data),
           "--run-dir", str(work / "torchrun"), "sample.constraints=[]", *tiny]  # fmt: skip
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    ok = res.returncode == 0 and (work / "torchrun" / "checkpoint.pt").is_file()
    return {
        "ok": ok,
        "backend": "nccl" if device.type == "cuda" else "gloo",
        "steps": steps,
        "seconds": seconds,
        "error": "" if ok else res.stderr[-2000:],
    }


def _tiny_run(device: torch.device, cache: Path, work: Path, tag: str) -> tuple[list[float], torch.Tensor]:
    """The same tiny training run on ``device``: its 5 losses and the EMA network's x̂0 on a fixed batch."""
    cfg = configure(
        preset_config("three-body", "quick"),
        [
            "data.n=40",
            "data.settings.n_frames=8",
            "data.settings.batch_size=64",
            "model.hidden=16",
            "model.layers=1",
            "train.steps=5",
            "train.batch_size=8",
            "train.warmup=1",
        ],  # fmt: skip
    )
    prep = prepare(cfg, cache, split="val", progress=False)
    tensors = prep.task.to_tensors(prep.train, prep.scaling, cfg.subtasks[0])
    torch.manual_seed(0)
    den = prep.task.build_denoiser(prep.scaling, tensors)
    tcfg = TrainConfig(**{**cfg.train.__dict__, "log_every": 10**9, "checkpoint_every": 10**9})
    state = train(den, tensors, tcfg, work / f"tiny-{tag}", device=device, progress=False)
    batch = {k: v[:8].to(device) for k, v in tensors.items()}
    x0 = batch.pop("x0")
    mask = batch.pop("mask", None)
    known = x0 if mask is not None else None  # as sample_tensors conditions: the masked entries of x0
    g = torch.Generator().manual_seed(1)
    x_t = x0 + 0.5 * torch.randn(x0.shape, generator=g).to(device)
    with torch.no_grad():
        pred = den.eval()(x_t, torch.full((x0.shape[0],), 0.3, device=device), known=known, mask=mask, **batch).x0
    return state.losses, pred.cpu()


def correctness_check(args: argparse.Namespace, device: torch.device, cache: Path, work: Path) -> dict:
    """The tiny run on the CPU and on ``device`` (TF32 off): losses and x̂0 agree to ``args.tol`` (relative)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu_losses, cpu_pred = _tiny_run(torch.device("cpu"), cache, work, "cpu")
        dev_losses, dev_pred = _tiny_run(device, cache, work, device.type)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    loss_rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu_losses, dev_losses, strict=True))
    pred_rel = float((dev_pred - cpu_pred).norm() / cpu_pred.norm().clamp_min(1e-12))
    return {
        "devices": f"cpu vs {device}",
        "max_rel_loss_difference": loss_rel,
        "rel_x0_difference": pred_rel,
        "tol": args.tol,
        "ok": loss_rel <= args.tol and pred_rel <= args.tol,
    }


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    lines = [
        f"GPU check: {report['device_name']} ({report['device']}), torch {report['torch']}, "
        f"{report['steps']} training steps after {report['warmup']} warm-up, sampling at {report['sample_steps']} steps"
        + (" — DRY RUN (tiny sizes: not throughput figures)" if report["dry"] else ""),
        "",
        "| preset | model | params | batch | train steps/s fp32 / bf16 | peak MiB fp32 / bf16 "
        "| sampler | samples/s fp32 / bf16 | sample peak MiB fp32 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["presets"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | failed: {r['error']} |||||||")
            continue
        lines.append(
            f"| {r['preset']} | {r['model']} | {r['parameters']:,} | {r['batch_size']} "
            f"| {_fmt(r['train_steps_per_s_fp32'])} / {_fmt(r['train_steps_per_s_bf16'])} "
            f"| {_fmt(r['train_peak_mib_fp32'], '.0f')} / {_fmt(r['train_peak_mib_bf16'], '.0f')} "
            f"| {r['sampler']} | {_fmt(r['sample_per_s_fp32'])} / {_fmt(r['sample_per_s_bf16'])} "
            f"| {_fmt(r['sample_peak_mib_fp32'], '.0f')} / {_fmt(r['sample_peak_mib_bf16'], '.0f')} |"
        )
    t, c = report["torchrun"], report["correctness"]
    lines += [
        "",
        f"torchrun, 1 process ({t['backend']}): {'ok' if t['ok'] else 'FAILED'}, "
        f"{t['steps']} steps in {t['seconds']:.1f} s",
        f"correctness ({c['devices']}, TF32 off): max relative loss difference {c['max_rel_loss_difference']:.2e}, "
        f"relative x̂0 difference {c['rel_x0_difference']:.2e} (tolerance {c['tol']:g}): "
        f"{'ok' if c['ok'] else 'FAILED'}",
        f"total {report['seconds']:.0f} s",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dry", action="store_true", help="every step tiny (the CI test on a CPU)")
    parser.add_argument("--out", default="results/gpu_check", help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--presets", nargs="*", help="paper presets to run (default: every simulated one)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 30; dry 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 5; dry 1)")
    parser.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default 50; dry 2)")
    parser.add_argument("--n-data", type=int, default=64, help="simulated trajectories / fields per preset")
    parser.add_argument("--tol", type=float, default=1e-3, help="relative tolerance of the correctness check")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.dry else 30)
    args.warmup = args.warmup or (1 if args.dry else 5)
    args.sample_steps = args.sample_steps or (2 if args.dry else 50)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible (use --device cpu --dry for the CPU test)")
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    known = paper_presets()
    names = args.presets or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"--presets {' '.join(unknown)}: not a simulated paper preset; choose from {' '.join(known)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dry": args.dry,
        "steps": args.steps,
        "warmup": args.warmup,
        "sample_steps": args.sample_steps,
        "presets": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp) / "runs"
        for name in names:
            t = time.perf_counter()
            try:
                row = check_preset(name, args, device, cache, work)
            except Exception as e:  # noqa: BLE001 - one preset's failure is reported, the others still run
                row = {"preset": f"{name}-paper", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            row["seconds"] = time.perf_counter() - t
            print(json.dumps(row), flush=True)
            report["presets"].append(row)
        report["torchrun"] = torchrun_check(args, device, work)
        print("torchrun:", json.dumps(report["torchrun"]), flush=True)
        report["correctness"] = correctness_check(args, device, cache, work)
        print("correctness:", json.dumps(report["correctness"]), flush=True)
    report["seconds"] = time.perf_counter() - started
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [r["preset"] for r in report["presets"] if "error" in r]
    ok = not failed and report["torchrun"]["ok"] and report["correctness"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
