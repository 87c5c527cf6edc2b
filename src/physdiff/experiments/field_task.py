"""The field task (advection, Burgers, Darcy, shallow water): fields on grids, predicted or generated.

Model layout (channel-first, method.md §2), asked of the system's facts (``field_axes``, ``channels``,
``periodic``, ``coefficient``; :class:`physdiff.systems.pde_registry.PDESystem`): fields are normalised per
physical channel (mean/std fit on the training split, :class:`FieldScaling`) and laid out as

* time-dependent scalar fields ``[N, T, *S]`` → ``[N, 1, T, *S]``: a space-time image;
* steady fields ``[N, *S]`` → ``[N, 1, *S]``, with the coefficient field (Darcy's ``a``) as a conditioning
  channel ``cond``;
* time-dependent multi-channel fields ``[N, T, C, *S]`` → ``[N, C, T, *S]`` (a space-time U-Net) or, with
  ``time_as_channels``, ``[N, T·C, *S]`` (a 2-D U-Net; much cheaper on a CPU).

Sub-tasks: ``prediction`` (time-dependent: the first frame is known; steady: u given the coefficient) and
``generation`` (unconditional). A model serving both is trained with the condition dropped for a fraction
``cond_drop`` of the samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physdiff.data.pdebench import FieldData, load_pde, simulate_to_file, write_pde
from physdiff.data.provenance import fingerprint
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.evaluation.field_metrics import (
    check_field_reference,
    evaluate_field_files,
    is_field_file,
    pdebench_field_metrics,
    rmse,
)
from physdiff.evaluation.mmd import generation_mmd, mmd_floor
from physdiff.evaluation.pdebench_metrics import METRIC_KEYS as PDEBENCH_METRIC_KEYS
from physdiff.experiments.config import PriorConfig, UNetConfig
from physdiff.experiments.task import Augment, Samples, Task, file_constants, register_task
from physdiff.models.unet import UNet
from physdiff.priors.base import Prior
from physdiff.priors.fields import FieldPrior, FieldResidualPrior, make_field_prior, noise_gain
from physdiff.systems.pde_registry import PDE_SYSTEMS, PDESystem, get_pde_system, spacing_from_coords

__all__ = ["FieldScaling", "FieldLayout", "FieldTask", "condition_dropout", "evaluate_own_layout"]


@dataclass
class FieldScaling:
    """Per-channel affine normalisation of the fields (and of the coefficient field), fit on training data."""

    mean: list[float]
    std: list[float]
    cond_mean: float = 0.0
    cond_std: float = 1.0

    @classmethod
    def fit(cls, data: FieldData) -> FieldScaling:
        u = data.fields
        system = get_pde_system(data.system)
        if "c" in system.field_axes:  # one mean/std per channel
            c = 1 + system.field_axes.index("c")
            axes = tuple(i for i in range(u.ndim) if i != c)
            mean, std = np.atleast_1d(u.mean(axis=axes)), np.atleast_1d(u.std(axis=axes))
        else:
            mean, std = np.atleast_1d(u.mean()), np.atleast_1d(u.std())
        out = cls(mean=[float(m) for m in mean], std=[float(s) if s > 0 else 1.0 for s in std])
        if data.coefficient is not None:
            out.cond_mean = float(data.coefficient.mean())
            out.cond_std = float(data.coefficient.std()) or 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FieldLayout:
    """Conversion between physical fields (the system's axis order) and model tensors (channel-first)."""

    system: PDESystem
    scaling: FieldScaling
    time_as_channels: bool = True

    @property
    def multichannel(self) -> bool:
        return "c" in self.system.field_axes

    @property
    def model_axes(self) -> tuple[str, ...]:
        """The spatial axes of the model tensor (the U-Net's), e.g. ``("t", "x")`` or ``("x", "y")``."""
        if self.multichannel and self.time_as_channels:
            return self.system.spatial_axes
        return tuple(a for a in self.system.field_axes if a != "c")

    @property
    def periodic(self) -> tuple[bool, ...]:
        return tuple(a in self.system.periodic for a in self.model_axes)

    def _affine(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.scaling.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(self.scaling.std, dtype=like.dtype, device=like.device)
        if self.multichannel:  # broadcast over [N, T, C, *S]
            shape = (-1,) + (1,) * len(self.system.spatial_axes)
            return mean.reshape(shape), std.reshape(shape)
        return mean, std

    def arrange(self, u: Tensor) -> Tensor:
        """Physical layout → model layout, without normalisation (also for masks)."""
        if self.multichannel:  # [N, T, C, *S]
            return u.flatten(1, 2) if self.time_as_channels else u.transpose(1, 2)
        return u[:, None]

    def to_model(self, u: Tensor) -> Tensor:
        """Physical fields → normalised model tensor."""
        mean, std = self._affine(u)
        return self.arrange((u - mean) / std)

    def to_physical(self, x: Tensor) -> Tensor:
        """Model tensor → physical fields in the system's axis order (differentiable)."""
        mean, std = self._affine(x)
        if self.multichannel:
            x = x.unflatten(1, (-1, len(self.scaling.mean))) if self.time_as_channels else x.transpose(1, 2)
        else:
            x = x[:, 0]
        return x * std + mean

    def cond_to_model(self, a: Tensor) -> Tensor:
        return ((a - self.scaling.cond_mean) / self.scaling.cond_std)[:, None]

    def cond_to_physical(self, c: Tensor) -> Tensor:
        return c[:, 0] * self.scaling.cond_std + self.scaling.cond_mean


def condition_dropout(p: float) -> Augment:
    """Training augmentation: drop the known-entry mask of a fraction ``p`` of the batch, so one model
    learns both prediction (conditioned) and generation (unconditional)."""

    def augment(batch: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
        mask = batch["mask"]
        keep = (torch.rand(mask.shape[0], generator=g) >= p).to(mask.dtype)
        return {**batch, "mask": mask * keep.view(-1, *([1] * (mask.dim() - 1)))}

    return augment


@register_task
class FieldTask(Task):
    kind = "fields"
    builtin_priors = ("residual", "momentum")
    metric_names = ("rmse", "constraint_rmse", "rmse_pooled", "mmd", *PDEBENCH_METRIC_KEYS)
    table_note = (
        "rmse: prediction RMSE vs ground truth on unknown entries (physical units); constraint_rmse: RMSE of "
        "the PDE residual over the stencil's points; floor: the same residual on the ground truth."
    )

    def supports_priors(self, data: FieldData) -> bool:
        return data.priors_available

    @property
    def system(self) -> PDESystem:
        return get_pde_system(self.cfg.data.system)

    def layout(self, scaling: FieldScaling) -> FieldLayout:
        model = self.cfg.model
        return FieldLayout(self.system, scaling, getattr(model, "time_as_channels", True))

    # ------------------------------------------------------------------------------------- data
    def load(self, cache_dir: Path, progress: bool = True) -> FieldData:
        d = self.cfg.data
        path = Path(d.path) if d.path else None
        if path is None:
            tag = "".join(f"_{k}{v}" for k, v in sorted(d.settings.items()))
            path = Path(cache_dir) / f"{d.system}_n{d.n}_seed{d.seed}{tag}.h5"
            if not path.is_file():
                if progress:
                    print(f"simulating {d.n} {d.system} samples → {path}")
                simulate_to_file(d.system, path, d.n, d.seed, **d.settings)
        data = load_pde(path, d.system, d.downsample_x, d.downsample_t, d.max_samples, max_bytes=d.max_bytes)
        if progress:
            for msg in data.messages:
                print(f"note ({path.name}): {msg}")
        return data

    def describe(self, data: FieldData) -> dict[str, Any]:
        """What a data file holds, for a run's ``config.yaml``: the sample count, grid and parameters."""
        params = {k: v for k, v in data.parameters.items() if isinstance(v, (int, float, str))}
        grid = {f"n_{k}": len(v) for k, v in data.coords.items()}
        return {"n": data.n_samples, "settings": {**grid, **params}}

    def fit_scaling(self, train: FieldData) -> FieldScaling:
        with np.errstate(over="ignore", invalid="ignore"):
            scaling = FieldScaling.fit(train)
        values = [*scaling.mean, *scaling.std, scaling.cond_mean, scaling.cond_std]
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"{train.source or 'data'}: the training split's fields give a non-finite normalisation "
                f"(mean {scaling.mean}, std {scaling.std}); are the values overflowing?"
            )
        return scaling

    def scaling_from_dict(self, d: Mapping[str, Any]) -> FieldScaling:
        names = {f.name for f in dataclasses.fields(FieldScaling)}
        if not isinstance(d, Mapping) or not {"mean", "std"} <= set(d) <= names:
            raise ValueError(f"a field scaling needs the keys mean, std (and cond_mean, cond_std), got {d!r}")
        try:
            scaling = FieldScaling(**d)
            values = [*map(float, scaling.mean), *map(float, scaling.std), float(scaling.cond_mean)]
            stds = [*map(float, scaling.std), float(scaling.cond_std)]
        except (TypeError, ValueError):
            raise ValueError(f"a field scaling holds numbers (lists for mean and std), got {d!r}") from None
        if not all(np.isfinite(values)) or not all(np.isfinite(v) and v > 0 for v in stds):
            raise ValueError(f"a field scaling needs finite means and finite stds > 0, got {d!r}")
        return scaling

    def to_tensors(
        self, data: FieldData, scaling: FieldScaling, subtask: str, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        layout = self.layout(scaling)
        x0 = layout.to_model(torch.from_numpy(data.fields).to(torch.float64)).to(dtype)
        known = self.system.prediction_mask(data.fields.shape) if subtask == "prediction" else None
        if known is None:
            mask = torch.zeros_like(x0)
        else:
            mask = layout.arrange(torch.from_numpy(known).expand(data.fields.shape)).to(dtype).expand_as(x0).clone()
        out = {"x0": x0, "mask": mask}
        if data.coefficient is not None:
            out["cond"] = layout.cond_to_model(torch.from_numpy(data.coefficient).to(torch.float64)).to(dtype)
        return out

    def from_tensors(self, x: Tensor, data: FieldData, scaling: FieldScaling) -> Samples:
        return {"u": self.layout(scaling).to_physical(x.detach().cpu().double()).numpy()}

    # ------------------------------------------------------------------------------ components
    def build_denoiser(self, scaling: FieldScaling, example: Mapping[str, Tensor]) -> Denoiser:
        model = self.cfg.model
        if not isinstance(model, UNetConfig):
            raise ValueError(f"model kind {model.kind!r} does not apply to field tasks; choose 'unet'")
        x0 = example["x0"]
        factor = 2 ** (len(model.channel_mults) - 1)  # the U-Net halves every axis once per level below the top
        shape = tuple(int(n) for n in x0.shape[2:])
        if any(n % factor for n in shape):
            where = self.cfg.data.path or f"the simulated {self.cfg.data.system} data"
            raise ValueError(
                f"{where}: the model grid {list(shape)} cannot be halved {len(model.channel_mults) - 1} times by the "
                f"U-Net (model.channel_mults = {list(model.channel_mults)}): every size must be divisible by "
                f"{factor}; use fewer levels (e.g. model.channel_mults=[1]) or another grid"
            )
        net = UNet(
            spatial_dims=x0.dim() - 2,
            channels=x0.shape[1],
            cond_channels=example["cond"].shape[1] if "cond" in example else 0,
            base_channels=model.base_channels,
            channel_mults=tuple(model.channel_mults),
            num_res_blocks=model.num_res_blocks,
            periodic=self.layout(scaling).periodic,
            dropout=model.dropout,
            attention=model.attention,
        )
        return Denoiser(
            net,
            make_schedule(self.cfg.diffusion.schedule, process=self.cfg.diffusion.process),
            prediction=self.cfg.diffusion.prediction,
        )

    def _residual_kwargs(self, data: FieldData, scaling: FieldScaling) -> dict[str, Any]:
        layout = self.layout(scaling)
        return {
            "spacing": spacing_from_coords(data.coords),
            "parameters": dict(data.parameters),
            "to_physical": layout.to_physical,
            "coefficient_to_physical": layout.cond_to_physical if data.coefficient is not None else None,
        }

    def _user_kwargs(self, cls: type[Prior], data: FieldData, scaling: FieldScaling) -> dict[str, Any]:
        """What a user prior class gets: a :class:`FieldResidualPrior` the system's grid and parameters; a
        :class:`FieldPrior` the grid (spacings, coordinates, periodic axes, axes) and ``to_physical``; every
        class the file's constants named as its dataclass fields."""
        if issubclass(cls, FieldResidualPrior):
            return self._residual_kwargs(data, scaling)
        kw: dict[str, Any] = {}
        if issubclass(cls, FieldPrior):
            kw = {
                "spacing": spacing_from_coords(data.coords),
                "coords": {k: torch.as_tensor(v) for k, v in data.coords.items()},
                "periodic": tuple(self.system.periodic),
                "axes": tuple(self.system.field_axes),
                "to_physical": self.layout(scaling).to_physical,
            }
        return kw | file_constants(cls, data.parameters)

    def make_prior(
        self, spec: PriorConfig, train: FieldData, scaling: FieldScaling, tensors: Mapping[str, Tensor]
    ) -> Prior:
        """The residual divided by its white-noise gain on the first training samples, so λ weighs the penalty
        against the data-matching loss (:func:`physdiff.priors.fields.noise_gain`)."""
        if spec.variant != "tweedie":
            raise ValueError(
                f"prior {spec.name!r}: PDE-residual priors support variant 'tweedie' only, got {spec.variant!r}"
            )
        if not train.priors_available:
            raise ValueError(f"{train.source}: the stored variables cannot evaluate the {train.system} residual")
        common = {"weight": spec.weight, "time_weight": self.time_weight(spec), **spec.options}
        user = self.prior_class(spec)
        if user is not None:
            prior = user(name=spec.name, **{**self._user_kwargs(user, train, scaling), **common})
        else:
            prior = make_field_prior(
                spec.name,
                self.system,
                term_scale=self.system.term_scale(train, spec.name),
                **self._residual_kwargs(train, scaling),
                **common,
            )
        if isinstance(prior, (FieldResidualPrior, FieldPrior)):
            ctx = {k: v[:32] for k, v in self.context(tensors).items()}
            prior.normaliser = noise_gain(prior, tensors["x0"][:32], generator=torch.Generator().manual_seed(0), **ctx)
        return prior

    def make_constraint_prior(self, name: str, train: FieldData, scaling: FieldScaling) -> Prior:
        user = self.prior_class(PriorConfig(name=name))
        if user is not None:
            return user(name=name, **self._user_kwargs(user, train, scaling))
        term = self.system.term_scale(train, name) if name in self.system.residuals else 1.0
        return make_field_prior(name, self.system, term_scale=term, **self._residual_kwargs(train, scaling))

    def augment(self) -> Augment | None:
        return condition_dropout(self.cfg.cond_drop) if self.cfg.cond_drop > 0 else None

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, samples: Samples, reference: FieldData, subtask: str) -> dict[str, np.ndarray]:
        """On prediction samples PDEBench's metrics (``rmse`` = its ``err_RMSE``, ``nrmse``, ``crmse``,
        ``max_error``, ``brmse``, ``frmse_low|mid|high``; :func:`pdebench_field_metrics`), the given first frame
        excluded; ``rmse_pooled``: one RMSE over the unknown entries; ``constraint_rmse``: RMSE of the
        system's residual over the stencil's points (physical units)."""
        out: dict[str, np.ndarray] = {}
        if subtask == "prediction" and subtask in self.cfg.metrics.values():
            out |= self.pdebench(samples["u"], reference)
        for key, task in self.cfg.metrics.items():
            if task != subtask:
                continue
            if key in ("rmse", "rmse_pooled"):
                if key == "rmse" and subtask == "prediction":
                    continue  # PDEBench's, above
                known = self.system.prediction_mask(reference.fields.shape) if subtask == "prediction" else None
                out[key] = rmse(samples["u"], reference.fields, known)
            elif key == "constraint_rmse":
                if reference.priors_available:
                    out[key] = self.system.residual_rmse(reference, samples["u"])
            elif key == "mmd":  # generation: the distance to the held-out distribution (physdiff.evaluation.mmd)
                out[key] = generation_mmd(samples["u"], reference.fields)[key]
            else:
                raise ValueError(
                    f"metrics: unknown field metric {key!r}; choose 'rmse', 'rmse_pooled', 'constraint_rmse' or 'mmd'"
                )
        return out

    def samples_as_data(self, samples: Samples, reference: FieldData) -> FieldData:
        return dataclasses.replace(reference, fields=np.asarray(samples["u"]), splits={})

    def pdebench(self, pred: np.ndarray, reference: FieldData) -> dict[str, np.ndarray]:
        """PDEBench's per-sample metrics of predictions against the reference, ``rmse`` (its ``err_RMSE``)
        included, fRMSE with the domain lengths of ``frmse_lengths`` (:func:`pdebench_field_metrics`)."""
        return pdebench_field_metrics(pred, reference, getattr(self.cfg, "frmse_lengths", "unit"), self.system)

    def floor(self, reference: FieldData) -> dict[str, float]:
        out = {"mmd": mmd_floor(reference.fields)} if "mmd" in self.cfg.metrics else {}
        if not reference.priors_available or "constraint_rmse" not in self.cfg.metrics:
            return out
        return out | {"constraint_rmse": float(np.mean(self.system.residual_rmse(reference)))}

    def write_samples(
        self, path: Path, samples: Samples, reference: FieldData, indices: np.ndarray, split: str, subtask: str
    ) -> Path:
        """Generated fields in the data's PDEBench layout, with ``source_indices`` into the reference file, the
        sub-task (``prediction`` samples are compared entry by entry with the reference), the
        ``downsample_x``/``downsample_t`` with which the reference was read (so evaluators read it alike) and
        the reference's provenance (:mod:`physdiff.data.provenance`)."""
        arrays = {"u": samples["u"]}
        if reference.coefficient is not None:
            arrays["a"] = reference.coefficient
        d = self.cfg.data
        attrs = {
            **reference.parameters,
            "generated": True,
            "task": subtask,
            "source_indices": np.asarray(indices, dtype=np.int64),
            "downsample_x": int(d.downsample_x),
            "downsample_t": int(d.downsample_t),
            "reference_path": str(Path(reference.source).resolve()) if reference.source else "",
            "reference_split": split,
            "reference_sha256": fingerprint(reference.fields, reference.coefficient),
        }
        n = samples["u"].shape[0]
        splits = {"train": [], "val": [], "test": np.arange(n)}
        return write_pde(path, reference.system, arrays, reference.coords, attrs, splits=splits)

    def read_samples(self, path: Path, max_samples: int | None = None) -> Samples:
        s = load_pde(path, self.cfg.data.system, max_samples=max_samples)
        return {"u": s.fields, "source_indices": np.asarray(s.parameters["source_indices"], dtype=np.int64)}

    def condition_from(self, condition: Mapping[str, Any], template: FieldData) -> FieldData:
        """Conditions to sample from, physical units: ``u0`` ``[N, *S]`` (``[N, C, *S]`` with channels), the
        first frames of a time-dependent system; or ``a`` ``[N, *S]``, the coefficient field of a steady one.
        The grid, frame count and parameters are the template's (the run's data). The unknown entries are
        filled with placeholders (the first frame repeated; zeros)."""
        system = self.system
        shape = template.fields.shape[1:]
        if system.coefficient is not None:
            if system.coefficient not in condition:
                raise ValueError(
                    f"condition: {system.name} is conditioned on its coefficient field {system.coefficient!r}"
                )
            a = np.asarray(condition[system.coefficient], dtype=np.float64)
            if a.shape[1:] != template.coefficient.shape[1:]:
                raise ValueError(
                    f"condition: {system.coefficient!r} has shape {a.shape}; the run's grid needs [N, "
                    f"{', '.join(map(str, template.coefficient.shape[1:]))}]"
                )
            if not (np.isfinite(a).all() and (a > 0).all()):
                raise ValueError(f"condition: {system.coefficient!r} must be finite and > 0")
            fields = np.zeros((a.shape[0], *shape))
            return dataclasses.replace(template, fields=fields, coefficient=a, splits={}, source=None)
        if "u0" not in condition:
            raise ValueError(f"condition: {system.name} is conditioned on its first frame 'u0'")
        u0 = np.asarray(condition["u0"], dtype=np.float64)
        if u0.shape[1:] != shape[1:]:
            raise ValueError(
                f"condition: 'u0' has shape {u0.shape}; the run's grid needs [N, {', '.join(map(str, shape[1:]))}]"
            )
        if not np.isfinite(u0).all():
            raise ValueError("condition: 'u0' contains NaN or inf values")
        fields = np.repeat(u0[:, None], shape[0], axis=1)
        return dataclasses.replace(template, fields=fields, coefficient=None, splits={}, source=None)

    def plot(
        self,
        out_dir: Path,
        reference: FieldData,
        generated: Mapping[str, Mapping[str, Samples]],
        *,
        per_seed=None,
        constraints=None,
        training_logs=None,
    ) -> list[Path]:
        from physdiff.evaluation.field_plots import plot_field_results

        fields = {arm: {task: s["u"] for task, s in per.items()} for arm, per in generated.items()}
        return plot_field_results(
            out_dir, reference, fields, per_seed=per_seed, constraints=constraints, training_logs=training_logs
        )

    def check_samples_reference(
        self, samples: Samples, reference: FieldData, subtask: str, *, samples_name: str, reference_name: str
    ) -> None:
        a = samples.get(self.system.coefficient or "a")
        check_field_reference(samples_name, reference_name, samples["u"], a, reference, self.system, subtask)

    # ------------------------------------------------------------------------------ file-level
    @classmethod
    def recognises(cls, path: Path) -> bool:
        from physdiff.data.pdebench.generic import is_generic_field_file

        return is_field_file(path) and not is_generic_field_file(path)

    @classmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        if options.get("draws") or options.get("protocol") or options.get("k"):
            raise ValueError(
                "--draws/--protocol/--k: field samples have no metrics over several draws (a particle protocol)"
            )
        return evaluate_field_files(
            samples,
            reference,
            system=system,
            task=options.get("task"),
            frmse_lengths=options.get("frmse_lengths") or "unit",
        )

    @classmethod
    def systems(cls) -> tuple[str, ...]:
        return tuple(PDE_SYSTEMS)

    @classmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        out = simulate_to_file(system, path, n, seed, **settings)
        return {"path": str(out), "system": system, "n": n, "seed": seed}


def evaluate_own_layout(
    task_cls: type[FieldTask], preset: str, samples: Path, reference: Path, options: Mapping[str, Any], **cfg_set: Any
) -> dict[str, Any]:
    """``physdiff evaluate`` for a field task that reads its own file layout (The Well, generic fields): the
    samples against the reference rows they were drawn from (``source_indices``; a prediction's given first frame
    and the recorded fingerprint checked), with the task of ``preset`` (``cfg_set``: config fields to set)."""
    import h5py

    from physdiff.data.provenance import check_reference
    from physdiff.evaluation.statistics import summarize_samples
    from physdiff.experiments.config import preset_config

    if options.get("draws") or options.get("protocol") or options.get("k"):
        raise ValueError(
            "--draws/--protocol/--k: field samples have no metrics over several draws (a particle protocol)"
        )
    cfg = preset_config(preset)
    cfg.data.path = str(reference)
    task = task_cls(cfg)
    ref = task.load(Path(reference).parent, progress=False)
    gen = task.read_samples(Path(samples))
    with h5py.File(samples, "r") as f:
        recorded = f.attrs.get("reference_sha256")
        subtask = str(options.get("task") or f.attrs.get("task", "prediction"))
    rows = ref.subset(gen["source_indices"])
    conditioned = {"u(t=0)": (gen["u"][:, 0], rows.fields[:, 0])} if subtask == "prediction" else {}
    check_reference(str(samples), str(reference), conditioned, recorded, fingerprint(rows.fields))
    for key, value in cfg_set.items():
        setattr(cfg, key, value(subtask) if callable(value) else value)
    return {"metrics": summarize_samples(task.evaluate(gen, rows, subtask)), "floor": {}}
