"""PDE field experiments (advection, Burgers, Darcy, shallow water): data → model tensors → U-Net denoiser.

Model layout (channel-first, method.md §2): fields are normalised per physical channel (mean/std fit on
the training split, :class:`FieldScaling`) and laid out as

* advection, Burgers ``[N, T, X]`` → ``[N, 1, T, X]``: a space-time image, ``X`` periodic;
* Darcy ``u [N, X, Y]`` → ``[N, 1, X, Y]``, with the permeability ``a`` as a conditioning channel ``cond``;
* shallow water ``[N, T, 3, X, Y]`` → ``[N, 3, T, X, Y]`` (a 3-D space-time U-Net) or, with
  ``time_as_channels``, ``[N, 3·T, X, Y]`` (a 2-D U-Net; much cheaper on a CPU).

Tasks: ``prediction`` (advection given u(0,·): the first frame is known; Darcy: u given a) and
``generation`` (unconditional samples). A model serving both is trained with the first-frame mask
dropped for a fraction ``cond_drop`` of the samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physdiff.data.pdebench import FieldData, load_pde, simulate_to_file, write_pde
from physdiff.data.provenance import fingerprint
from physdiff.diffusion import Denoiser, make_schedule, sample
from physdiff.experiments.particles import ConstraintConfig, DiffusionConfig, PriorConfig, SampleConfig
from physdiff.models.unet import UNet
from physdiff.priors.base import Prior
from physdiff.training.trainer import TrainConfig

__all__ = [
    "FIELD_EXPERIMENTS",
    "FieldDataConfig",
    "FieldModelConfig",
    "FieldExperimentConfig",
    "FieldScaling",
    "FieldLayout",
    "ensure_field_dataset",
    "prepare_field_tensors",
    "build_field_denoiser",
    "sample_fields",
    "write_field_samples",
    "condition_dropout",
]

FIELD_EXPERIMENTS = ("advection", "burgers", "darcy", "shallow-water")
#: the tasks of each experiment (the poster's PDE table)
EXPERIMENT_TASKS = {
    "advection": ("prediction", "generation"),
    "burgers": ("generation",),
    "darcy": ("prediction",),
    "shallow-water": ("generation",),
}


@dataclass
class FieldDataConfig:
    system: str = "advection"
    n: int = 400
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # solver settings (nx, nt, beta, nu, ...)
    path: str | None = None  # an existing (physdiff or PDEBench) file to use instead of simulating
    downsample_x: int = 1
    downsample_t: int = 1
    max_samples: int | None = None


@dataclass
class FieldModelConfig:
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    attention: bool = False
    dropout: float = 0.0
    time_as_channels: bool = True  # shallow water: stack frames as channels of a 2-D U-Net


@dataclass
class FieldExperimentConfig:
    experiment: str = "advection"
    preset: str = "quick"
    tasks: list[str] = field(default_factory=lambda: ["prediction"])
    cond_drop: float = 0.0  # fraction of training samples without the first-frame condition
    data: FieldDataConfig = field(default_factory=FieldDataConfig)
    model: FieldModelConfig = field(default_factory=FieldModelConfig)
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(prediction="x0"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(objective="x0"))
    sample: SampleConfig = field(default_factory=SampleConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    priors: list[PriorConfig] = field(default_factory=list)
    device: str = "auto"


# ------------------------------------------------------------------------------------------ data
def ensure_field_dataset(cfg: FieldDataConfig, cache_dir: str | Path, progress: bool = True) -> Path:
    """The data file: the user's ``path``, or a cached simulation keyed by its settings."""
    if cfg.path:
        return Path(cfg.path)
    tag = "".join(f"_{k}{v}" for k, v in sorted(cfg.settings.items()))
    path = Path(cache_dir) / f"{cfg.system}_n{cfg.n}_seed{cfg.seed}{tag}.h5"
    if not path.is_file():
        if progress:
            print(f"simulating {cfg.n} {cfg.system} samples → {path}")
        simulate_to_file(cfg.system, path, cfg.n, cfg.seed, **cfg.settings)
    return path


def load_field_dataset(cfg: FieldDataConfig, cache_dir: str | Path, progress: bool = True) -> tuple[Path, FieldData]:
    """The data file and its contents, down-sampled as configured; the loader's notes are printed."""
    path = ensure_field_dataset(cfg, cache_dir, progress)
    data = load_pde(path, cfg.system, cfg.downsample_x, cfg.downsample_t, cfg.max_samples)
    if progress:
        for msg in data.messages:
            print(f"note ({path.name}): {msg}")
    return path, data


@dataclass
class FieldScaling:
    """Per-channel affine normalisation of the fields (and of Darcy's permeability), fit on training data."""

    mean: list[float]
    std: list[float]
    cond_mean: float = 0.0
    cond_std: float = 1.0

    @classmethod
    def fit(cls, data: FieldData) -> FieldScaling:
        u = data.fields
        axes = tuple(i for i in range(u.ndim) if i != 2) if data.system == "shallow-water" else None
        mean = np.atleast_1d(u.mean(axis=axes)).tolist()
        std = np.atleast_1d(u.std(axis=axes)).tolist()
        std = [s if s > 0 else 1.0 for s in std]
        out = cls(mean=[float(m) for m in mean], std=[float(s) for s in std])
        if data.coefficient is not None:
            out.cond_mean = float(data.coefficient.mean())
            out.cond_std = float(data.coefficient.std()) or 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FieldLayout:
    """Conversion between physical fields (the system's axis order) and model tensors (channel-first)."""

    system: str
    scaling: FieldScaling
    time_as_channels: bool = True

    @property
    def periodic(self) -> tuple[bool, ...]:
        return {"advection": (False, True), "burgers": (False, True)}.get(self.system, (False, False))

    def spatial_dims(self, shape: tuple[int, ...]) -> int:
        return len(shape) - 2

    def _affine(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.scaling.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(self.scaling.std, dtype=like.dtype, device=like.device)
        return mean, std

    def to_model(self, u: Tensor) -> Tensor:
        """Physical fields → normalised model tensor."""
        mean, std = self._affine(u)
        if self.system == "shallow-water":  # [N, T, C, X, Y]
            x = (u - mean[:, None, None]) / std[:, None, None]
            if self.time_as_channels:
                return x.flatten(1, 2)  # [N, T·C, X, Y] (frame-major)
            return x.transpose(1, 2)  # [N, C, T, X, Y]
        return ((u - mean) / std)[:, None]

    def to_physical(self, x: Tensor, n_frames: int | None = None) -> Tensor:
        """Model tensor → physical fields in the system's axis order (differentiable)."""
        mean, std = self._affine(x)
        if self.system == "shallow-water":
            if self.time_as_channels:
                x = x.unflatten(1, (-1, len(self.scaling.mean)))  # [N, T, C, X, Y]
            else:
                x = x.transpose(1, 2)
            return x * std[:, None, None] + mean[:, None, None]
        return x[:, 0] * std + mean

    def cond_to_model(self, a: Tensor) -> Tensor:
        return ((a - self.scaling.cond_mean) / self.scaling.cond_std)[:, None]

    def cond_to_physical(self, c: Tensor) -> Tensor:
        return c[:, 0] * self.scaling.cond_std + self.scaling.cond_mean

    def first_frame_mask(self, x: Tensor) -> Tensor:
        """1 on the first frame u(0,·) of time-dependent fields (the prediction task's condition)."""
        mask = torch.zeros_like(x)
        if self.system in ("advection", "burgers"):
            mask[:, :, 0] = 1.0
        elif self.system == "shallow-water":
            if self.time_as_channels:
                mask[:, : len(self.scaling.mean)] = 1.0
            else:
                mask[:, :, 0] = 1.0
        return mask


def prepare_field_tensors(
    data: FieldData, layout: FieldLayout, task: str, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """``x0``, the known-entry ``mask`` of the task and, for Darcy, the conditioning ``cond`` (= a)."""
    x0 = layout.to_model(torch.from_numpy(data.fields).to(torch.float64)).to(dtype)
    if task == "prediction" and data.system in ("advection", "burgers", "shallow-water"):
        mask = layout.first_frame_mask(x0)
    elif task in ("prediction", "generation"):
        mask = torch.zeros_like(x0)
    else:
        raise ValueError(f"unknown task {task!r}; choose 'prediction' or 'generation'")
    out = {"x0": x0, "mask": mask}
    if data.coefficient is not None:
        out["cond"] = layout.cond_to_model(torch.from_numpy(data.coefficient).to(torch.float64)).to(dtype)
    return out


def condition_dropout(p: float):
    """Training augmentation: drop the known-entry mask of a fraction ``p`` of the batch, so one model
    learns both prediction (conditioned) and generation (unconditional)."""

    def augment(batch: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
        mask = batch["mask"]
        keep = (torch.rand(mask.shape[0], generator=g) >= p).to(mask.dtype)
        return {**batch, "mask": mask * keep.view(-1, *([1] * (mask.dim() - 1)))}

    return augment


# ----------------------------------------------------------------------------------------- model
def build_field_denoiser(
    model: FieldModelConfig, diffusion: DiffusionConfig, layout: FieldLayout, example: dict[str, Tensor]
) -> Denoiser:
    """U-Net + schedule + parametrisation for tensors shaped like ``example['x0']`` (one sample or a batch)."""
    x0 = example["x0"]
    channels, spatial = x0.shape[1], x0.shape[2:]
    periodic = layout.periodic[: len(spatial)] if layout.system in ("advection", "burgers") else (False,) * len(spatial)
    net = UNet(
        spatial_dims=len(spatial),
        channels=channels,
        cond_channels=example["cond"].shape[1] if "cond" in example else 0,
        base_channels=model.base_channels,
        channel_mults=tuple(model.channel_mults),
        num_res_blocks=model.num_res_blocks,
        periodic=periodic,
        dropout=model.dropout,
        attention=model.attention,
    )
    return Denoiser(net, make_schedule(diffusion.schedule), prediction=diffusion.prediction)


@torch.no_grad()
def sample_fields(
    denoiser: Denoiser,
    tensors: dict[str, Tensor],
    cfg: SampleConfig,
    seed: int,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    constraint: tuple[ConstraintConfig, list[Prior]] | None = None,
) -> Tensor:
    """Samples shaped like ``tensors['x0']``: known entries (``mask``) and ``cond`` as conditions; batched, seeded.

    ``constraint``: a sampling-time constraint and its priors (beyond the paper), applied to x̂0.
    """
    x0 = tensors["x0"]
    g = torch.Generator(device=device).manual_seed(seed)
    conditional = bool(tensors["mask"].any())
    out = []
    for i in range(0, x0.shape[0], cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        ctx = {"cond": tensors["cond"][sl].to(device)} if "cond" in tensors else {}
        known = x0[sl].to(device)
        cond_kw = {"known": known, "mask": tensors["mask"][sl].to(device)} if conditional else {}
        hook = None
        if constraint is not None:
            c, priors = constraint
            hook = c.hook(priors, cond_kw.get("mask"), ctx)
        out.append(
            sample(
                denoiser,
                known.shape,
                sampler=cfg.sampler,
                steps=cfg.steps,
                eta=cfg.eta,
                generator=g,
                progress=progress,
                dtype=known.dtype,
                device=device,
                x0_hook=hook,
                **cond_kw,
                **ctx,
            ).cpu()
        )
    return torch.cat(out)


def write_field_samples(
    path: Path,
    fields: np.ndarray,
    ref: FieldData,
    indices: np.ndarray,
    task: str = "generation",
    downsample: tuple[int, int] = (1, 1),
    split: str = "test",
) -> Path:
    """Generated fields in the data's PDEBench layout, with ``source_indices`` into the reference file, the
    ``task`` (``prediction`` samples are compared entry by entry with the reference), the
    ``downsample_x``/``downsample_t`` with which the reference was read (so evaluators read it alike) and the
    reference's provenance (:mod:`physdiff.data.provenance`)."""
    arrays = {"u": fields}
    if ref.coefficient is not None:
        arrays["a"] = ref.coefficient
    attrs = {**ref.parameters, "generated": True, "task": task, "source_indices": np.asarray(indices, dtype=np.int64)}
    attrs.update(downsample_x=int(downsample[0]), downsample_t=int(downsample[1]))
    attrs.update(
        reference_path=str(Path(ref.source).resolve()) if ref.source else "",
        reference_split=split,
        reference_sha256=fingerprint(ref.fields, ref.coefficient),
    )
    n = fields.shape[0]
    return write_pde(path, ref.system, arrays, ref.coords, attrs, splits={"train": [], "val": [], "test": np.arange(n)})
