"""The experiment configuration: one typed tree for every task, and its presets as data.

An experiment is a task (what is generated, how it is conditioned and evaluated: ``particles`` or
``fields``) + a denoiser (``model``) + priors + a sampler, trained and evaluated per arm and seed. Its
presets live in ``src/physdiff/presets/<experiment>-<preset>.yaml``: :func:`preset_config` reads one,
``key=value`` overrides change any key (:func:`physdiff.config.apply_overrides`), and every run writes the
resolved tree as ``config.yaml`` (``physdiff config EXPERIMENT`` prints it).

``model`` is typed by its ``kind`` (a key of :data:`MODEL_CONFIGS`): ``egnn`` and ``transformer`` for
particles, ``unet`` for fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from physdiff.config import ConfigError, from_dict, load_yaml_dict
from physdiff.presets import PRESETS, experiments, preset_path
from physdiff.training.trainer import TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "EGNNConfig",
    "TransformerConfig",
    "UNetConfig",
    "MODEL_CONFIGS",
    "DiffusionConfig",
    "ConstraintConfig",
    "SampleConfig",
    "PriorConfig",
    "ExperimentConfig",
    "PRESETS",
    "experiments",
    "preset_path",
    "preset_config",
]


@dataclass
class DataConfig:
    """Where the data come from: a cached simulation keyed by its settings, or a user's file (``path``)."""

    system: str = "three-body"
    n: int = 1000
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # simulator settings (n_frames; nx, nt, beta, ...)
    path: str | None = None  # an existing file to use instead of simulating
    downsample_x: int = 1  # fields: keep every k-th grid point (read time)
    downsample_t: int = 1  # fields: keep every k-th frame
    max_samples: int | None = None  # read at most this many samples


@dataclass
class ModelConfig:
    """The denoiser network; the subclass is chosen by ``kind`` (:data:`MODEL_CONFIGS`)."""

    kind: str = "egnn"

    @classmethod
    def select(cls, value: Any) -> type[ModelConfig]:
        """The config class of ``value["kind"]`` (used by :func:`physdiff.config.from_dict`)."""
        kind = value.get("kind", "egnn") if isinstance(value, dict) else "egnn"
        if kind not in MODEL_CONFIGS:
            raise ConfigError(f"config key 'model.kind': unknown model {kind!r}; choose one of {sorted(MODEL_CONFIGS)}")
        return MODEL_CONFIGS[kind]


@dataclass
class EGNNConfig(ModelConfig):
    """Space-time EGNN (E(n)- and permutation-equivariant), :class:`physdiff.models.egnn.SpaceTimeEGNN`."""

    kind: str = "egnn"
    hidden: int = 64
    layers: int = 3
    vector_channels: int = 8
    heads: int = 4
    rotation_augmentation: bool = False


@dataclass
class TransformerConfig(ModelConfig):
    """Non-equivariant baseline, :class:`physdiff.models.transformer.ParticleTransformer` (the paper's
    three-body setting trains it with random rotations)."""

    kind: str = "transformer"
    hidden: int = 64
    layers: int = 3
    heads: int = 4
    rotation_augmentation: bool = True


@dataclass
class UNetConfig(ModelConfig):
    """EDM-style U-Net for fields, :class:`physdiff.models.unet.UNet`."""

    kind: str = "unet"
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    attention: bool = False
    dropout: float = 0.0
    time_as_channels: bool = True  # 2-D fields with time: frames stacked as channels of a 2-D U-Net


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"egnn": EGNNConfig, "transformer": TransformerConfig, "unet": UNetConfig}


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # linear | cosine
    prediction: str = "x0"  # what the network predicts: eps | x0 | v


@dataclass
class ConstraintConfig:
    """A sampling-time constraint (beyond the paper; :mod:`physdiff.priors.sampling`), reported in its own
    rows: every trained arm is sampled once more with it."""

    priors: list[str] = field(default_factory=lambda: ["momentum"])  # prior names (with a residual)
    mode: str = "projection"  # projection | guidance
    t_start: float = 1.0  # act at diffusion times t <= t_start
    iterations: int = 1  # guidance steps; for a projection the most Gauss–Newton steps (exact in 1 if linear)
    scale: float = 0.1  # guidance step size
    tol: float = 1e-6  # a projection stops once max |R| <= tol (physical units)
    cg_iters: int = 50  # conjugate-gradient iterations per projection step (large residuals: PDE fields)

    @property
    def label(self) -> str:
        return f"{self.mode}:{'+'.join(self.priors)}"


@dataclass
class SampleConfig:
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    n_test: int = 100  # evaluation samples (the first ones of the split)
    batch_size: int = 100
    constraints: list[ConstraintConfig] = field(default_factory=list)


@dataclass
class PriorConfig:
    """One physical-feasibility prior of a with-prior arm: J = J_score + λ·J_R (method.md §3).

    ``name``: a built-in prior of the task (``momentum``, ``energy``, ``residual``, ...) or a user prior
    class by import path, ``"module:Class"`` or ``"path/to/file.py:Class"``.
    """

    name: str = "energy"
    weight: float = 1.0
    # w(t): "one" (w ≡ 1), "alpha2" (w = α_t²) or "low_noise" (≈ 1 where σ_t < 0.35): the Tweedie estimate
    # is uninformative at high noise, where nonlinear features such as 1/R_ij of a collapsed x̂0 explode
    time_weight: str = "one"
    # h̃_θ of a nonlinear prior (method.md §3.3): "tweedie" matches h(x̂0) to h(x0); "aux_head" trains an
    # extra head on the denoiser's hidden node states to predict h(x0)
    variant: str = "tweedie"
    # further keyword settings of the prior object, e.g. {kinetic_per_component: false}
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """The whole experiment; ``task`` names the task kind (``particles`` | ``fields``), ``metrics`` maps each
    table metric to the sub-task whose samples it is measured on (``prediction`` given the known part,
    ``generation`` without), in the table's column order."""

    experiment: str = "three-body"
    preset: str = "quick"
    task: str = "particles"
    metrics: dict[str, str] = field(default_factory=dict)
    cond_drop: float = 0.0  # fraction of training samples without the condition (one model, both sub-tasks)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=EGNNConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(objective="x0"))
    sample: SampleConfig = field(default_factory=SampleConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    priors: list[PriorConfig] = field(default_factory=list)

    SUBTASKS: ClassVar[tuple[str, ...]] = ("prediction", "generation")

    @property
    def subtasks(self) -> list[str]:
        """The sub-tasks sampled: those the metrics are measured on, in order (``prediction`` if none)."""
        out = list(dict.fromkeys(self.metrics.values()))
        return out or ["prediction"]

    def with_arms(self, arms: list[str] | None) -> ExperimentConfig:
        """A copy whose priors include every ``prior:<name>`` of ``arms`` (a user prior named by import path,
        ``prior:module:Class``, joins with its defaults: λ = 1, w ≡ 1)."""
        cfg = dataclasses.replace(self, priors=list(self.priors))
        have = {p.name for p in cfg.priors}
        for arm in arms or []:
            name = arm.removeprefix("prior:")
            if arm.startswith("prior:") and name not in have:
                cfg.priors.append(PriorConfig(name=name, weight=1.0, time_weight="one", variant="tweedie"))
                have.add(name)
        return cfg

    def arms(self) -> dict[str, list[PriorConfig]]:
        """``{"no_prior": [], "prior:<name>": [prior config], ...}``: one with-prior arm per configured prior."""
        arms: dict[str, list[PriorConfig]] = {"no_prior": []}
        for p in self.priors:
            arms[f"prior:{p.name}"] = [p]
        return arms


# ------------------------------------------------------------------------------------------ presets
def preset_config(experiment: str, preset: str = "quick") -> ExperimentConfig:
    """The preset ``<experiment>-<preset>.yaml`` as a typed config."""
    try:
        path = preset_path(experiment, preset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return from_dict(ExperimentConfig, load_yaml_dict(path), where=str(path))


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
