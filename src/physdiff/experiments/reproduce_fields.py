"""``physdiff reproduce advection|burgers|darcy|shallow-water``: the poster's PDE table, without vs with prior.

For each seed and arm (``no_prior``, ``prior:residual``) it trains a U-Net denoiser (data matching), runs
the experiment's tasks on the evaluation split and writes a results folder with the particle tables'
schema:

    results.json  table.md  config.yaml  data/  arms/<arm>/seed<k>/{checkpoint.pt, metrics.csv, samples_<task>.h5}
    plots/fields_<task>.png

Metric keys (method.md §5): ``rmse`` — prediction RMSE against ground truth over the unknown entries,
physical units; ``constraint_rmse`` — RMSE of the experiment's PDE residual over every point where the
stencil applies (generation samples; for Darcy, which has no generation task, the predictions). The
``floor`` entry is ``constraint_rmse`` of the ground truth itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physdiff.config import save_yaml, to_dict
from physdiff.data.pdebench import FieldData
from physdiff.diffusion import make_schedule
from physdiff.evaluation.field_metrics import rmse
from physdiff.experiments import tables
from physdiff.experiments.fields import (
    EXPERIMENT_TASKS,
    FIELD_EXPERIMENTS,
    FieldDataConfig,
    FieldExperimentConfig,
    FieldLayout,
    FieldModelConfig,
    FieldScaling,
    build_field_denoiser,
    condition_dropout,
    load_field_dataset,
    prepare_field_tensors,
    sample_fields,
    write_field_samples,
)
from physdiff.experiments.particles import ConstraintConfig, DiffusionConfig, PriorConfig, SampleConfig
from physdiff.experiments.reproduce import time_weight_fn
from physdiff.physics.finite_difference import time_derivative
from physdiff.priors import total_prior_loss
from physdiff.priors.fields import make_field_prior, noise_gain
from physdiff.systems.pde_registry import get_pde_system, spacing_from_coords
from physdiff.training.distributed import DistInfo, resolve_device
from physdiff.training.trainer import TrainConfig, load_ema_weights, train

__all__ = [
    "FIELD_TABLE_METRICS",
    "METRIC_TASKS",
    "field_preset_config",
    "reproduce_fields",
    "field_markdown_table",
    "train_field_arm",
    "build_field_priors",
    "evaluate_field_arm",
    "load_field_experiment",
]

#: metric → the task whose samples it is measured on
METRIC_TASKS = {
    "advection": {"rmse": "prediction", "constraint_rmse": "generation"},
    "burgers": {"constraint_rmse": "generation"},
    "darcy": {"rmse": "prediction", "constraint_rmse": "prediction"},
    "shallow-water": {"constraint_rmse": "generation"},
}
FIELD_TABLE_METRICS = {k: tuple(v) for k, v in METRIC_TASKS.items()}
#: the with-prior arm of each table: the system's own residual (linear / multilinear), λ chosen by
#: ``physdiff sweep EXPERIMENT --grid priors.0.weight=1,10,100,1000`` on the val split (docs/results.md):
#: the best point that does not undershoot the ground truth's floor; w(t) ≡ 1 (data matching: x̂0 is not
#: amplified at high noise, and a linear residual of the posterior mean is the posterior mean of it)
FIELD_PRIORS = {
    "advection": [PriorConfig("residual", 100.0, "one")],
    "burgers": [PriorConfig("residual", 100.0, "one")],
    "darcy": [PriorConfig("residual", 100.0, "one")],
    "shallow-water": [PriorConfig("residual", 1.0, "one")],  # every point undershoots the floor: smallest λ
}

_QUICK_SETTINGS = {
    "advection": {"nx": 64, "nt": 32, "t_final": 0.5},  # resolved in time: floor 0.013 vs std 0.6
    "burgers": {"nx": 64, "nt": 32},
    "darcy": {"n_grid": 32},
    "shallow-water": {"nx": 32, "ny": 32, "nt": 16},
}


# beyond the paper, reported in their own rows: the linear residuals (advection, Darcy given a) are also
# enforced at sampling time by projecting x̂0 onto R = 0 (physdiff.priors.sampling; val figures in
# docs/results.md). Burgers and shallow water accept the same override (Gauss–Newton) but run without.
FIELD_SAMPLING_CONSTRAINTS: dict[str, list[ConstraintConfig]] = {
    "advection": [ConstraintConfig(["residual"], cg_iters=200)],
    "darcy": [ConstraintConfig(["residual"], cg_iters=200)],
}


def _constraints(experiment: str) -> list[ConstraintConfig]:
    return [dataclasses.replace(c, priors=list(c.priors)) for c in FIELD_SAMPLING_CONSTRAINTS.get(experiment, [])]


def field_preset_config(experiment: str, preset: str = "quick") -> FieldExperimentConfig:
    """The ``quick`` (2 CPU cores, minutes per arm) and ``paper`` (GPU scale) presets of a PDE experiment."""
    if experiment not in FIELD_EXPERIMENTS:
        raise ValueError(f"unknown PDE experiment {experiment!r}; choose one of {FIELD_EXPERIMENTS}")
    tasks = list(EXPERIMENT_TASKS[experiment])
    cond_drop = 0.5 if len(tasks) == 2 else 0.0
    if preset == "quick":
        data = FieldDataConfig(
            system=experiment,
            n=240 if experiment == "shallow-water" else 400,
            settings=dict(_QUICK_SETTINGS[experiment]),
        )
        model = FieldModelConfig(base_channels=16, channel_mults=[1, 2, 2], num_res_blocks=1)
        tr = TrainConfig(
            # Darcy is the cheapest (2-D 32 × 32, no time axis): 1000 steps halve its error (val, 3 seeds)
            steps=1000 if experiment == "darcy" else 500,
            batch_size=16,
            lr=2e-3,
            warmup=50,
            ema_decay=0.99,
            log_every=25,
            checkpoint_every=250,
            objective="x0",
        )
        smp = SampleConfig(sampler="ddim", steps=25, n_test=32, batch_size=32, constraints=_constraints(experiment))
    elif preset == "paper":
        sys_ = get_pde_system(experiment)
        data = FieldDataConfig(system=experiment, n=10_000, settings=dict(sys_.large))
        model = FieldModelConfig(base_channels=64, channel_mults=[1, 2, 2, 4], num_res_blocks=2, time_as_channels=False)
        tr = TrainConfig(
            steps=100_000,
            batch_size=64,
            lr=2e-4,
            warmup=1000,
            ema_decay=0.9999,
            log_every=100,
            checkpoint_every=5000,
            objective="x0",
        )
        smp = SampleConfig(
            sampler="ddpm", steps=1000, eta=1.0, n_test=1000, batch_size=100, constraints=_constraints(experiment)
        )
    else:
        raise ValueError(f"unknown preset {preset!r}; choose 'quick' or 'paper'")
    return FieldExperimentConfig(
        experiment=experiment,
        preset=preset,
        tasks=tasks,
        cond_drop=cond_drop,
        data=data,
        model=model,
        diffusion=DiffusionConfig(schedule="linear", prediction="x0"),
        train=tr,
        sample=smp,
        seeds=[0, 1, 2],
        priors=list(FIELD_PRIORS[experiment]),
    )


# ------------------------------------------------------------------------------------------ priors
def term_scale(data: FieldData, residual: str = "residual") -> float:
    """A typical magnitude of one term of the residual ``residual`` on the training data, the yardstick of
    the ground-truth check: |f| for Darcy; for time-dependent systems the RMS of its time-derivative term,
    ∂_t of the first channel (u_t, h_t), or h² ∂_t(hu) for the shallow-water momentum residual (which is
    multiplied through by h²)."""
    if data.system == "darcy":
        return abs(float(data.parameters.get("f", 1.0))) or 1.0
    u = torch.from_numpy(data.fields[:64])
    if data.system == "shallow-water" and residual == "momentum":
        term = u[:, 1:-1, 0].square() * time_derivative(u[:, :, 1], data.dt, dim=1)
    else:
        first = u[:, :, 0] if data.system == "shallow-water" else u
        term = time_derivative(first, data.dt, dim=1)
    value = float(term.square().mean().sqrt())
    return value if value > 0 else 1.0


def build_field_priors(cfg: FieldExperimentConfig, arm: str, data: FieldData, layout: FieldLayout) -> list:
    """The priors of one arm on model-space fields: λ and w(t) from the config, the residual divided by its
    white-noise gain on the first training samples, and checked against the ground truth (refused with
    a message naming the prior if the residual is not at its floor there)."""
    specs = field_arm_priors(cfg)
    if arm not in specs:
        raise ValueError(f"unknown arm {arm!r}; this experiment has {sorted(specs)}")
    schedule = make_schedule(cfg.diffusion.schedule)
    x0 = layout.to_model(torch.from_numpy(data.fields[:32]))
    ctx = (
        {"cond": layout.cond_to_model(torch.from_numpy(data.coefficient[:32]))} if data.coefficient is not None else {}
    )
    for p in specs[arm]:
        if getattr(p, "variant", "tweedie") != "tweedie":
            raise ValueError(f"prior {p.name!r}: PDE-residual priors support variant 'tweedie' only, got {p.variant!r}")
    priors = [
        make_field_prior(
            p.name,
            data.system,
            weight=p.weight,
            time_weight=time_weight_fn(p.time_weight, schedule),
            spacing=spacing_from_coords(data.coords),
            parameters=dict(data.parameters),
            to_physical=layout.to_physical,
            coefficient_to_physical=layout.cond_to_physical if data.coefficient is not None else None,
            term_scale=term_scale(data, p.name),
            **p.options,
        )
        for p in specs[arm]
    ]
    g = torch.Generator().manual_seed(0)
    for pr in priors:
        pr.normaliser = noise_gain(pr, x0, generator=g, **ctx)
        pr.check_ground_truth(x0, **ctx)  # refuse a sign, unit or grid-spacing bug before training
    return priors


def build_field_constraints(cfg: FieldExperimentConfig, data: FieldData, layout: FieldLayout) -> list:
    """The sampling-time constraints of ``cfg.sample.constraints`` (beyond the paper) with their priors on
    model-space fields: the residuals of ``FIELD_PRIORS`` in physical units (R = 0 is what is enforced,
    so no normalisation is needed)."""
    tables.check_constraints(cfg.sample.constraints)
    out = []
    for c in cfg.sample.constraints:
        priors = [
            make_field_prior(
                name,
                data.system,
                spacing=spacing_from_coords(data.coords),
                parameters=dict(data.parameters),
                to_physical=layout.to_physical,
                coefficient_to_physical=layout.cond_to_physical if data.coefficient is not None else None,
            )
            for name in c.priors
        ]
        c.hook(priors, None, {})  # validates the settings
        out.append((c, priors))
    return out


def field_arm_priors(cfg: FieldExperimentConfig) -> dict[str, list[PriorConfig]]:
    return tables.arms_of(cfg.priors)


# ---------------------------------------------------------------------------------------- pipeline
def load_field_experiment(
    cfg: FieldExperimentConfig, cache_dir: Path, progress: bool = True, split: str = "test", scaling: dict | None = None
):
    """Data file and set, train and evaluation splits, and the layout (scaling fit on the training split,
    or the stored ``scaling`` of a run)."""
    if split not in ("val", "test"):
        raise ValueError(f"evaluation split must be 'val' or 'test', got {split!r}")
    data_path, data = load_field_dataset(cfg.data, cache_dir, progress)
    train_data = data.subset(data.splits["train"])
    test_idx = data.splits[split][: cfg.sample.n_test]
    if len(test_idx) == 0:
        raise ValueError(f"{data_path}: the {split!r} split is empty")
    fitted = FieldScaling(**scaling) if scaling else FieldScaling.fit(train_data)
    layout = FieldLayout(data.system, fitted, cfg.model.time_as_channels)
    return data_path, data, train_data, data.subset(test_idx), test_idx, layout


def _training_task(cfg: FieldExperimentConfig) -> str:
    return "prediction" if "prediction" in cfg.tasks else "generation"


def train_field_arm(
    cfg: FieldExperimentConfig,
    arm: str,
    seed: int,
    run_dir: Path,
    train_data: FieldData,
    layout: FieldLayout,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
    dist_info: DistInfo = DistInfo(),
):
    """Train one arm with one seed; returns the denoiser with its EMA weights loaded."""
    tensors = prepare_field_tensors(train_data, layout, _training_task(cfg))
    priors = build_field_priors(cfg, arm, train_data, layout)  # checks each prior on the ground truth
    extra = None
    if priors:

        def extra(loss_out, batch):
            ctx = {"cond": batch["cond"]} if batch.get("cond") is not None else {}
            return total_prior_loss(priors, loss_out, ctx)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scaling.json").write_text(json.dumps(layout.scaling.to_dict()))
    save_yaml(cfg, run_dir / "config.yaml")
    torch.manual_seed(seed)
    den = build_field_denoiser(cfg.model, cfg.diffusion, layout, tensors)
    tcfg = TrainConfig(**{**to_dict(cfg.train), "seed": seed})
    augment = condition_dropout(cfg.cond_drop) if cfg.cond_drop > 0 else None
    if progress:
        print(f"[{arm} | seed {seed}] training {tcfg.steps} steps on {train_data.n_samples} fields → {run_dir}")
    train(
        den,
        tensors,
        tcfg,
        run_dir,
        config_dict={**to_dict(cfg), "arm": arm},
        extra_loss=extra,
        augment=augment,
        resume=resume,
        device=device,
        progress=progress,
        dist_info=dist_info,
    )
    load_ema_weights(den, run_dir / "checkpoint.pt", device=device)
    return den.eval()


def physical_mask(data: FieldData, task: str) -> np.ndarray | None:
    """Known entries of the task in the physical layout (the first frame for time-dependent prediction)."""
    if task != "prediction" or data.system == "darcy":
        return None
    mask = np.zeros(data.fields.shape[:2] + (1,) * (data.fields.ndim - 2))
    mask[:, 0] = 1.0
    return mask


def evaluate_field_arm(
    den,
    cfg: FieldExperimentConfig,
    seed: int,
    run_dir: Path,
    test_data: FieldData,
    test_idx: np.ndarray,
    layout: FieldLayout,
    device: torch.device,
    progress: bool = True,
    constraint=None,
    split: str = "test",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run every task on the evaluation split; write ``samples_<task>.h5`` (with a sampling-time
    ``constraint`` (``(ConstraintConfig, priors)``, beyond the paper): ``constrained_<mode>_<priors>_<task>.h5``);
    per-sample metrics and samples."""
    system = get_pde_system(test_data.system)
    samples: dict[str, np.ndarray] = {}
    prefix = "samples" if constraint is None else "constrained_" + constraint[0].label.replace(":", "_")
    for task in cfg.tasks:
        tensors = prepare_field_tensors(test_data, layout, task)
        x = sample_fields(den, tensors, cfg.sample, seed=seed, device=device, progress=progress, constraint=constraint)
        fields = layout.to_physical(x.double()).numpy()
        samples[task] = fields
        ds = (cfg.data.downsample_x, cfg.data.downsample_t)
        write_field_samples(
            run_dir / f"{prefix}_{task}.h5", fields, test_data, test_idx, task=task, downsample=ds, split=split
        )
    metrics: dict[str, np.ndarray] = {}
    for key, task in METRIC_TASKS[test_data.system].items():
        if task not in samples:
            continue
        if key == "rmse":
            metrics[key] = rmse(samples[task], test_data.fields, physical_mask(test_data, task))
        elif test_data.priors_available:
            metrics[key] = system.residual_rmse(test_data, samples[task])
    return metrics, samples


def field_markdown_table(results: dict) -> str:
    """The PDE table of ``results``: each metric labelled with the task it was measured on."""
    tasks = results.get("metric_tasks", {})
    labels = {k: f"{k} ({t})" for k, t in tasks.items()}
    note = (
        "rmse: prediction RMSE vs ground truth on unknown entries (physical units); constraint_rmse: RMSE of "
        "the PDE residual over the stencil's points; floor: the same residual on the ground truth."
    )
    return tables.markdown_table(results, FIELD_TABLE_METRICS[results["experiment"]], labels, note)


def reproduce_fields(
    experiment: str,
    preset: str = "quick",
    out: str | Path | None = None,
    *,
    overrides: list[str] = (),
    seeds: list[int] | None = None,
    arms: list[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    split: str = "test",
) -> dict[str, Any]:
    """Run a PDE experiment's table: arms × seeds; returns the ``results.json`` content."""
    out = Path(out or f"results/{experiment}-{preset}")
    cfg = tables.configure_run(field_preset_config(experiment, preset), overrides, seeds, out)
    tables.check_constraints(cfg.sample.constraints)
    dev = resolve_device(device)
    data_path, data, train_data, test_data, test_idx, layout = load_field_experiment(
        cfg, Path(cache_dir or out / "data"), progress, split
    )

    arm_specs = field_arm_priors(cfg)
    if not data.priors_available:
        print(f"note: {data_path.name} cannot evaluate the {experiment} residual; only the no_prior arm runs")
        arm_specs = {"no_prior": []}
    arm_specs = tables.select_arms(arm_specs, arms)
    for arm in arm_specs:  # fail on a bad prior (name, system, variant, sign/scale) before anything is trained
        build_field_priors(cfg, arm, train_data, layout)
    constraints = build_field_constraints(cfg, train_data, layout)
    constrained: dict[str, dict[int, dict]] = {}  # "<arm> + <mode>:<priors>" → seed → per-sample metrics

    def run_one(arm: str, seed: int, run_dir: Path):
        den = train_field_arm(cfg, arm, seed, run_dir, train_data, layout, dev, resume, progress)
        result = evaluate_field_arm(den, cfg, seed, run_dir, test_data, test_idx, layout, dev, progress, split=split)
        for c in constraints:  # beyond the paper: the same model, sampled with a sampling-time constraint
            m_c, _ = evaluate_field_arm(
                den, cfg, seed, run_dir, test_data, test_idx, layout, dev, progress, c, split=split
            )
            constrained.setdefault(f"{arm} + {c[0].label}", {})[seed] = m_c
        return result

    arm_metrics, generated, wall = tables.run_arms(arm_specs, cfg.seeds, out, run_one)
    rows = {row: tables.aggregate(m) for row, m in constrained.items()}
    floor = {}
    if data.priors_available:
        floor["constraint_rmse"] = float(np.mean(get_pde_system(experiment).residual_rmse(test_data)))
    results = {
        "experiment": experiment,
        "split": split,
        "preset": preset,
        "seeds": list(cfg.seeds),
        "metric_tasks": {k: v for k, v in METRIC_TASKS[experiment].items() if v in cfg.tasks},
        "arms": arm_metrics,
        "paired": tables.paired(arm_metrics),
        "floor": floor,
        # beyond the paper, kept apart from the paper's arms: each arm's model sampled with a constraint
        "sampling_constraints": rows,
        "sampling_constraints_paired": tables.paired_constraints(rows, arm_metrics),
        "data": str(data_path),
        "wall_time_s": wall,
    }
    tables.write_results(out, results, field_markdown_table(results))
    try:
        from physdiff.evaluation.field_plots import plot_field_results

        plot_field_results(out / "plots", test_data, generated)
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the results
        print(f"warning: plotting failed: {e}")
    return results
