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

from physdiff.config import ConfigError, bounded, from_dict, load_yaml_dict, one_of
from physdiff.diffusion.parametrisation import PREDICTIONS
from physdiff.diffusion.samplers import SAMPLERS
from physdiff.diffusion.schedule import PROCESSES, SCHEDULES
from physdiff.presets import PRESETS, experiments, preset_path
from physdiff.priors.aux_head import PRIOR_VARIANTS
from physdiff.priors.sampling import CONSTRAINT_MODES, PROJECTION_METHODS
from physdiff.training.trainer import TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "EGNNConfig",
    "TransformerConfig",
    "UNetConfig",
    "MODEL_CONFIGS",
    "PARTICLE_STATES",
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


#: w(t) of a prior by name (:func:`physdiff.experiments.task.time_weight_fn`)
TIME_WEIGHTS: tuple[str, ...] = ("one", "alpha2", "low_noise")


@dataclass
class DataConfig:
    """Where the data come from: a cached simulation keyed by its settings, or a user's file (``path``)."""

    system: str = "three-body"
    n: int = field(default=1000, metadata=bounded(ge=3))  # enough for train, val and test splits
    seed: int = field(default=0, metadata=bounded(ge=0))
    settings: dict[str, Any] = field(default_factory=dict)  # simulator settings (n_frames; nx, nt, beta, ...)
    path: str | None = None  # an existing file to use instead of simulating
    downsample_x: int = field(default=1, metadata=bounded(ge=1))  # fields: keep every k-th grid point
    downsample_t: int = field(default=1, metadata=bounded(ge=1))  # fields: keep every k-th frame
    max_samples: int | None = field(default=None, metadata=bounded(ge=1))  # read at most this many samples
    # the read budget in bytes (default: half the available memory): larger declared reads are refused
    max_bytes: int | None = field(default=None, metadata=bounded(ge=1))
    # recorded in a run's config.yaml, checked when the run is resumed, sampled or loaded: the data file's size
    # in bytes and the sha256 of the arrays used (physdiff.data.hdf5.content_sha256)
    file_bytes: int | None = None
    content_sha256: str | None = None


#: ``model.state`` of a particle network: (R, V) generated, or R only (V by central differences of R in time)
PARTICLE_STATES: tuple[str, ...] = ("positions+velocities", "positions")


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
    hidden: int = field(default=64, metadata=bounded(ge=1))
    layers: int = field(default=3, metadata=bounded(ge=1))
    vector_channels: int = field(default=8, metadata=bounded(ge=1))
    heads: int = field(default=4, metadata=bounded(ge=1))
    rotation_augmentation: bool = False
    # what the network generates: positions and velocities, or positions only (velocities differenced)
    state: str = field(default="positions+velocities", metadata=one_of(PARTICLE_STATES))


@dataclass
class TransformerConfig(ModelConfig):
    """Non-equivariant baseline, :class:`physdiff.models.transformer.ParticleTransformer` (the paper's
    three-body setting trains it with random rotations)."""

    kind: str = "transformer"
    hidden: int = field(default=64, metadata=bounded(ge=1))
    layers: int = field(default=3, metadata=bounded(ge=1))
    heads: int = field(default=4, metadata=bounded(ge=1))
    rotation_augmentation: bool = True
    state: str = field(default="positions+velocities", metadata=one_of(PARTICLE_STATES))


@dataclass
class UNetConfig(ModelConfig):
    """EDM-style U-Net for fields, :class:`physdiff.models.unet.UNet`."""

    kind: str = "unet"
    base_channels: int = field(default=16, metadata=bounded(ge=1))
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2], metadata=bounded(ge=1))
    num_res_blocks: int = field(default=1, metadata=bounded(ge=1))
    attention: bool = False
    dropout: float = field(default=0.0, metadata=bounded(ge=0, lt=1))
    time_as_channels: bool = True  # 2-D fields with time: frames stacked as channels of a 2-D U-Net


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"egnn": EGNNConfig, "transformer": TransformerConfig, "unet": UNetConfig}


@dataclass
class DiffusionConfig:
    """The generative process: ``vp`` (variance preserving, with a ``schedule``) or ``flow`` (the linear
    interpolant of flow matching; its schedule is ``linear``), and what the network predicts."""

    process: str = field(default="vp", metadata=one_of(lambda: tuple(PROCESSES)))  # vp | flow
    schedule: str = field(default="linear", metadata=one_of(lambda: tuple(SCHEDULES)))  # linear | cosine (vp)
    prediction: str = field(default="x0", metadata=one_of(PREDICTIONS))  # eps | x0 | v (flow: v = ε − x0)

    def __post_init__(self) -> None:
        if self.process == "flow" and self.schedule != "linear":
            raise ConfigError(
                f"config key 'diffusion.schedule': the flow process has the linear interpolant only, got "
                f"{self.schedule!r} (leave diffusion.schedule=linear)"
            )
        if self.process == "flow" and self.prediction == "eps":
            raise ConfigError(
                "config key 'diffusion.prediction': with the flow process predict 'v' or 'x0' (x̂0 from ε̂ divides by "
                "1 − t and amplifies errors ~1000× near t = 1)"
            )


@dataclass
class ConstraintConfig:
    """A sampling-time constraint (beyond the paper; :mod:`physdiff.priors.sampling`), reported in its own
    rows: every trained arm is sampled once more with it."""

    priors: list[str] = field(default_factory=lambda: ["momentum"])  # prior names (with a residual)
    # projection | guidance | pcfm | eci | diffusionpde | dps | dflow (physdiff.priors.sampling.METHODS)
    mode: str = field(default="projection", metadata=one_of(lambda: CONSTRAINT_MODES))
    t_start: float = field(default=1.0, metadata=bounded(gt=0, le=1))  # act at diffusion times t <= t_start
    # guidance steps; for a projection the most Gauss–Newton steps (exact in 1 if linear)
    iterations: int = field(default=1, metadata=bounded(ge=1))
    # guidance step, normalised: 1 = the exact line step of the linearised residual along its gradient; chosen
    # on val (docs/benchmarks.md, "Normalised guidance": eligible on all six quick tables, the largest gain)
    scale: float = field(default=1.0, metadata=bounded(gt=0))
    tol: float = field(default=1e-6, metadata=bounded(ge=0))  # a projection stops once max |R| <= tol
    # conjugate-gradient iterations per projection step on the matrix-free path (large or nonlinear fields)
    cg_iters: int = field(default=50, metadata=bounded(ge=1))
    # the projection's path: auto (dense for <= 512 residual entries per sample, sparse and exact for a linear
    # residual on <= sparse_max state entries, matrix-free otherwise), or one of them forced
    method: str = field(default="auto", metadata=one_of(lambda: PROJECTION_METHODS))
    sparse_max: int = field(default=1 << 15, metadata=bounded(ge=1))
    rtol: float = field(default=1e-8, metadata=bounded(gt=0, lt=1))  # matrix-free conjugate gradients
    # add a time-dependent PDE prior's first-step equation (closes the frame a central difference leaves free)
    first_step: bool = False
    # pcfm: the relaxed penalty correction's weight λ (0 = off), gradient steps and step size
    penalty: float = field(default=0.0, metadata=bounded(ge=0))
    penalty_steps: int = field(default=20, metadata=bounded(ge=1))
    penalty_step: float = field(default=1e-2, metadata=bounded(gt=0))
    # eci: draw the interpolation noise afresh every this many mixing iterations (0 = keep the initial noise)
    resample_every: int = field(default=0, metadata=bounded(ge=0))

    @property
    def label(self) -> str:
        return f"{self.mode}:{'+'.join(self.priors)}" + ("+first_step" if self.first_step else "")

    def hook_options(self) -> dict[str, Any]:
        """The keyword settings of :func:`physdiff.priors.sampling.constraint_hook` (all but the priors, mask
        and context)."""
        names = ("mode", "t_start", "iterations", "scale", "tol", "cg_iters", "method", "sparse_max", "rtol")
        names += ("first_step", "penalty", "penalty_steps", "penalty_step", "resample_every")
        return {name: getattr(self, name) for name in names}


@dataclass
class SampleConfig:
    sampler: str = field(default="ddim", metadata=one_of(lambda: tuple(SAMPLERS)))
    steps: int = field(default=50, metadata=bounded(ge=1))
    eta: float = field(default=0.0, metadata=bounded(ge=0, le=1))
    n_test: int = field(default=100, metadata=bounded(ge=1))  # evaluation samples (the first ones of the split)
    batch_size: int = field(default=100, metadata=bounded(ge=1))
    constraints: list[ConstraintConfig] = field(default_factory=list)
    # samples drawn per condition; > 1 for metrics over several draws (GeoTDM's min/ave ADE/FDE over K = 5)
    draws: int = field(default=1, metadata=bounded(ge=1))
    # precision of the sampling state and network: float64 keeps an exact projection's result to float64
    # (a Darcy sample projected in float32 keeps a residual of float32 round-off, ~1e-6 of the model's)
    dtype: str = field(default="float32", metadata=one_of(("float32", "float64")))
    # torch.compile of the denoiser network for sampling (off by default; pays off over many batches)
    compile: bool = False


@dataclass
class PriorConfig:
    """One physical-feasibility prior of a with-prior arm: J = J_score + λ·J_R (method.md §3).

    ``name``: a built-in prior of the task (``momentum``, ``energy``, ``residual``, ...) or a user prior
    class by import path, ``"module:Class"`` or ``"path/to/file.py:Class"``.
    """

    name: str = "energy"
    weight: float = field(default=1.0, metadata=bounded(ge=0))
    # w(t): "one" (w ≡ 1), "alpha2" (w = α_t²) or "low_noise" (≈ 1 where σ_t < 0.35): the Tweedie estimate
    # is uninformative at high noise, where nonlinear features such as 1/R_ij of a collapsed x̂0 explode
    time_weight: str = field(default="one", metadata=one_of(TIME_WEIGHTS))
    # h̃_θ of a nonlinear prior (method.md §3.3): "tweedie" matches h(x̂0) to h(x0); "aux_head" trains an
    # extra head on the denoiser's hidden node states to predict h(x0)
    variant: str = field(default="tweedie", metadata=one_of(PRIOR_VARIANTS))
    # further keyword settings of the prior object, e.g. {kinetic_per_component: false}
    options: dict[str, Any] = field(default_factory=dict)
    # the ground-truth check's tolerance on RMS(R(x0)) / the residual's own scale (null: the prior's default)
    tol: float | None = field(default=None, metadata=bounded(ge=0))


@dataclass
class ExperimentConfig:
    """The whole experiment; ``task`` names the task kind (``particles`` | ``fields``), ``metrics`` maps each
    table metric to the sub-task whose samples it is measured on (``prediction`` given the known part,
    ``generation`` without), in the table's column order."""

    experiment: str = field(default="three-body", metadata=one_of(lambda: tuple(experiments())))
    preset: str = field(default="quick", metadata=one_of(lambda: tuple(PRESETS)))
    task: str = "particles"
    metrics: dict[str, str] = field(default_factory=dict)
    # fraction of training samples without the condition (one model, both sub-tasks)
    cond_drop: float = field(default=0.0, metadata=bounded(ge=0, lt=1))
    # frames given in the prediction sub-task of a particle task (1: the first frame; GeoTDM: 10)
    known_frames: int = field(default=1, metadata=bounded(ge=1))
    # fields: fRMSE's domain lengths, unit (Lx = Ly = 1 as PDEBench's scripts pass) or physical (the grid's extent)
    frmse_lengths: str = field(default="unit", metadata=one_of(("unit", "physical")))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=EGNNConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(objective="x0"))
    sample: SampleConfig = field(default_factory=SampleConfig)
    seeds: list[int] = field(default_factory=lambda: [0], metadata=bounded(ge=0))
    priors: list[PriorConfig] = field(default_factory=list)

    SUBTASKS: ClassVar[tuple[str, ...]] = ("prediction", "generation")

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("config key 'seeds' names no seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config key 'seeds' lists a seed twice: {self.seeds}")
        bad = {k: v for k, v in self.metrics.items() if v not in self.SUBTASKS}
        if bad:
            raise ConfigError(f"config key 'metrics': sub-tasks {bad} are not one of {self.SUBTASKS}")
        names = [p.name for p in self.priors]
        if len(set(names)) != len(names):
            raise ConfigError(f"config key 'priors' names a prior twice: {names} (arms are named prior:<name>)")

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
