"""Particle experiments (three-body, five-spring): simulate → train → sample the test set → evaluate.

Task (the poster's): generate the trajectory given its first frame (positions and velocities).
Inside the model a trajectory is x [L, K, 2D] = (R, V): positions centred per frame (zero centre of
mass, the subspace where a VP process keeps translation invariance) and both channels divided by one
scalar scale each (a scalar keeps rotation equivariance). Outputs are mapped back exactly: the centre
of mass of a closed system moves uniformly, CoM(l) = CoM(0) + l·dt·P(0)/M, and frame 0 is known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physdiff.data.augment import random_orthogonal, rotate_particle_state
from physdiff.data.particles_h5 import ParticleData, simulate_to_file, write_particles
from physdiff.data.provenance import fingerprint
from physdiff.diffusion import Denoiser, make_schedule, sample
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.transformer import ParticleTransformer
from physdiff.physics import particles as phys
from physdiff.priors.aux_head import ignore_aux_head_weights
from physdiff.priors.base import Prior
from physdiff.priors.sampling import constraint_hook
from physdiff.training.trainer import TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "DiffusionConfig",
    "SampleConfig",
    "ConstraintConfig",
    "ParticleExperimentConfig",
    "ParticleScaling",
    "prepare_particle_tensors",
    "build_denoiser",
    "zero_com_projection",
    "sample_particles",
    "ensure_dataset",
]


@dataclass
class DataConfig:
    system: str = "three-body"
    n: int = 1000
    seed: int = 0
    n_frames: int | None = None
    path: str | None = None  # an existing file to use instead of simulating


@dataclass
class ModelConfig:
    kind: str = "egnn"  # egnn | transformer
    hidden: int = 64
    layers: int = 3
    vector_channels: int = 8
    heads: int = 4
    rotation_augmentation: bool = False  # the non-equivariant baseline's training setting


@dataclass
class DiffusionConfig:
    schedule: str = "linear"
    prediction: str = "eps"


@dataclass
class ConstraintConfig:
    """A sampling-time constraint (beyond the paper; :mod:`physdiff.priors.sampling`), reported in its own
    rows: every trained arm is sampled once more with it."""

    priors: list[str] = field(default_factory=lambda: ["momentum"])  # built-in prior names (with a residual)
    mode: str = "projection"  # projection | guidance
    t_start: float = 1.0  # act at diffusion times t <= t_start
    iterations: int = 1  # guidance steps; for a projection the most Gauss–Newton steps (exact in 1 if linear)
    scale: float = 0.1  # guidance step size
    tol: float = 1e-6  # a projection stops once max |R| <= tol (physical units)
    cg_iters: int = 50  # conjugate-gradient iterations per projection step (large residuals: PDE fields)

    def hook(self, priors: list[Prior], mask: Tensor | None, context: dict[str, Tensor]):
        """The sampler's ``x0_hook`` enforcing ``priors`` (:func:`physdiff.priors.sampling.constraint_hook`)."""
        return constraint_hook(
            priors,
            mode=self.mode,
            mask=mask,
            context=context,
            t_start=self.t_start,
            iterations=self.iterations,
            scale=self.scale,
            tol=self.tol,
            cg_iters=self.cg_iters,
        )

    @property
    def label(self) -> str:
        return f"{self.mode}:{'+'.join(self.priors)}"


@dataclass
class SampleConfig:
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    n_test: int = 100
    batch_size: int = 100
    constraints: list[ConstraintConfig] = field(default_factory=list)


@dataclass
class PriorConfig:
    name: str = "energy"
    weight: float = 1.0
    # w(t): "one" (w ≡ 1) or "alpha2" (w = α_t², the signal fraction: the Tweedie estimate is
    # uninformative at high noise, where nonlinear features such as 1/R_ij of a collapsed x̂0 explode)
    time_weight: str = "one"
    # h̃_θ of a nonlinear prior (method.md §3.3): "tweedie" matches h(x̂0) to h(x0); "aux_head" trains an
    # extra head on the denoiser's hidden node states to predict h(x0) (physdiff.priors.aux_head)
    variant: str = "tweedie"
    # further keyword settings of the prior object, e.g. {kinetic_per_component: false} for the energy
    # priors' per-particle kinetic features (the auxiliary-head variant needs them)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParticleExperimentConfig:
    experiment: str = "three-body"
    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    priors: list[PriorConfig] = field(default_factory=list)
    device: str = "auto"


# ------------------------------------------------------------------------------------------ data
def ensure_dataset(cfg: DataConfig, cache_dir: str | Path, progress: bool = True) -> Path:
    """The data file: the user's ``path``, or a cached simulation keyed by its settings."""
    if cfg.path:
        return Path(cfg.path)
    frames = f"_L{cfg.n_frames}" if cfg.n_frames else ""
    path = Path(cache_dir) / f"{cfg.system}_n{cfg.n}_seed{cfg.seed}{frames}.h5"
    if not path.is_file():
        settings = {"n_frames": cfg.n_frames} if cfg.n_frames else {}
        summary = simulate_to_file(cfg.system, path, cfg.n, cfg.seed, progress=progress, **settings)
        if progress:
            print(f"simulated {cfg.n} {cfg.system} trajectories in {summary['seconds']:.1f} s → {path}")
    return path


def _com(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Centre of mass per frame: r [N, L, K, D], m [N, K] → [N, L, 1, D]."""
    return phys.centre_of_mass(r, m[:, None, :])


@dataclass
class ParticleScaling:
    """Scalar scales of positions and velocities (stored with the run, undone on output)."""

    positions: float
    velocities: float

    @classmethod
    def fit(cls, data: ParticleData) -> ParticleScaling:
        r = data.positions - _com(data.positions, data.masses)
        return cls(positions=float(r.std()), velocities=float(data.velocities.std()))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def prepare_particle_tensors(data: ParticleData, scaling: ParticleScaling, dtype=torch.float32) -> dict[str, Tensor]:
    """x0 [N, L, K, 2D] (centred, scaled), the first-frame mask, and the context (masses, edges)."""
    r = (data.positions - _com(data.positions, data.masses)) / scaling.positions
    v = data.velocities / scaling.velocities
    x0 = torch.from_numpy(np.concatenate([r, v], axis=-1)).to(dtype)
    mask = torch.zeros_like(x0)
    mask[:, 0] = 1.0
    out = {"x0": x0, "mask": mask, "masses": torch.from_numpy(data.masses).to(dtype)}
    if data.edges is not None:
        out["edges"] = torch.from_numpy(data.edges).to(dtype)
    return out


def restore_particles(x: Tensor, ref: ParticleData, scaling: ParticleScaling) -> tuple[np.ndarray, np.ndarray]:
    """Undo scaling and centring: the centre of mass moves uniformly from the known first frame."""
    d = ref.positions.shape[-1]
    x = x.detach().cpu().double().numpy()
    r = x[..., :d] * scaling.positions
    v = x[..., d:] * scaling.velocities
    m = ref.masses
    com0 = _com(ref.positions[:, :1], m)  # [N, 1, 1, D]
    vcm = (m[:, :, None] * ref.velocities[:, 0]).sum(1) / m.sum(1, keepdims=True)  # [N, D]
    steps = np.arange(r.shape[1])[None, :, None, None] * ref.constants["dt"]
    return r + com0 + steps * vcm[:, None, None, :], v


# ----------------------------------------------------------------------------------------- model
def zero_com_projection(dim: int) -> Callable[..., Tensor]:
    """``project(x, masses=None)``: the position channels of a state ``[B, L, K, 2D]`` projected orthogonally
    onto Σ_k m_k R_k = 0 per frame (:func:`physdiff.physics.particles.zero_com_projection`), where the
    mass-centred data live; velocities untouched. ``masses`` ``[B, K]`` (unit masses when absent)."""

    def project(x: Tensor, masses: Tensor | None = None, **_: Tensor) -> Tensor:
        m = None if masses is None else masses.to(x)[:, None, :]
        return torch.cat([phys.zero_com_projection(x[..., :dim], m), x[..., dim:]], dim=-1)

    return project


def build_network(cfg: ModelConfig, dim: int) -> nn.Module:
    if cfg.kind == "egnn":
        return SpaceTimeEGNN(
            dim, hidden=cfg.hidden, layers=cfg.layers, vector_channels=cfg.vector_channels, heads=cfg.heads
        )
    if cfg.kind == "transformer":
        return ParticleTransformer(dim, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads)
    raise ValueError(f"unknown particle model {cfg.kind!r}; choose 'egnn' or 'transformer'")


def build_denoiser(model: ModelConfig, diffusion: DiffusionConfig, dim: int) -> Denoiser:
    """Network + schedule + parametrisation, with noise kept in the zero-CoM subspace.

    The network loads checkpoints of aux-head prior runs too: it skips the auxiliary heads' weights
    unless heads were attached to it (:func:`physdiff.priors.aux_head.attach_aux_heads`); sampling never
    uses them.
    """
    return Denoiser(
        ignore_aux_head_weights(build_network(model, dim)),
        make_schedule(diffusion.schedule),
        prediction=diffusion.prediction,
        project=zero_com_projection(dim),
    )


def rotation_augmentation(dim: int):
    """Random orthogonal transformation of a whole batch (baseline training), one Q per trajectory."""

    def augment(batch: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
        x0 = batch["x0"]
        q = random_orthogonal(x0.shape[0], dim, generator=g, dtype=x0.dtype)
        return {**batch, "x0": rotate_particle_state(x0, q)}

    return augment


@torch.no_grad()
def sample_particles(
    denoiser: Denoiser,
    tensors: dict[str, Tensor],
    cfg: SampleConfig,
    seed: int,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    constraint: tuple[ConstraintConfig, list[Prior]] | None = None,
) -> Tensor:
    """Generate every trajectory of ``tensors`` given its first frame; batched, seeded.

    ``constraint``: a sampling-time constraint and its prior objects (beyond the paper), applied to x̂0.
    """
    x0 = tensors["x0"]
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, x0.shape[0], cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        ctx = {k: tensors[k][sl].to(device) for k in ("masses", "edges") if k in tensors}
        known = x0[sl].to(device)
        mask = tensors["mask"][sl].to(device)
        hook = None
        if constraint is not None:
            c, priors = constraint
            hook = c.hook(priors, mask, ctx)
        out.append(
            sample(
                denoiser,
                known.shape,
                sampler=cfg.sampler,
                steps=cfg.steps,
                eta=cfg.eta,
                generator=g,
                known=known,
                mask=mask,
                x0_hook=hook,
                progress=progress,
                dtype=known.dtype,
                device=device,
                **ctx,
            ).cpu()
        )
    return torch.cat(out)


def write_samples(
    path: Path, r: np.ndarray, v: np.ndarray, ref: ParticleData, indices: np.ndarray, split: str = "test"
) -> None:
    """Generated trajectories in the data layout, with ``source_indices`` into the reference file, the
    reference's provenance (:mod:`physdiff.data.provenance`) and, as ``floor_*``, the true floor: the
    conservation metrics of the reference rows themselves (not of the samples)."""
    from physdiff.evaluation.particle_metrics import floor_metrics

    arrays = {"positions": r, "velocities": v, "masses": ref.masses, "source_indices": indices}
    if ref.edges is not None:
        arrays["edges"] = ref.edges
    attrs = {"system": ref.system, **ref.constants, "generated": True}
    attrs |= {f"floor_{k}": v for k, v in floor_metrics(ref).items()}
    attrs |= {
        "reference_path": str(Path(ref.path).resolve()) if ref.path else "",
        "reference_split": split,
        "reference_sha256": fingerprint(ref.positions, ref.velocities, ref.masses, ref.edges),
    }
    write_particles(path, arrays, attrs, splits=None, floor=False)
