"""The particle task (three-body, five-spring): generate a trajectory given its first frame.

Inside the model a trajectory is x ``[L, K, 2D]`` = (R, V): positions centred per frame on the mass-weighted
centre of mass (the subspace Σ_k m_k R_k = 0 where a VP process keeps translation invariance, method.md
§2) and both channels divided by one scalar scale each (a scalar keeps rotation equivariance). Outputs are
mapped back exactly: the centre of mass of a closed system moves uniformly, CoM(l) = CoM(0) + l·dt·P(0)/M,
and frame 0 is known. Context: ``masses`` ``[N, K]`` and, for springs, ``edges`` ``[N, K, K]``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physdiff.data.augment import random_orthogonal, rotate_particle_state
from physdiff.data.particles_h5 import ParticleData, load_particles, make_splits, simulate_to_file, write_particles
from physdiff.data.provenance import fingerprint
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.evaluation.particle_metrics import evaluate_files, floor_metrics, per_sample_metrics
from physdiff.experiments.config import EGNNConfig, PriorConfig, TransformerConfig
from physdiff.experiments.task import Augment, Samples, Task, register_task
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.transformer import ParticleTransformer
from physdiff.physics import particles as phys
from physdiff.priors.aux_head import PRIOR_VARIANTS, ignore_aux_head_weights, make_aux_head_prior
from physdiff.priors.base import Prior
from physdiff.priors.particles import PARTICLE_PRIORS, ParticlePrior, make_prior
from physdiff.systems.registry import PARTICLE_SYSTEMS

__all__ = ["ParticleScaling", "ParticleTask", "zero_com_projection"]

log = logging.getLogger("physdiff")


@dataclass
class ParticleScaling:
    """Scalar scales of positions and velocities (stored with the run, undone on output)."""

    positions: float
    velocities: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _com(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Centre of mass per frame: r [N, L, K, D], m [N, K] → [N, L, 1, D]."""
    return phys.centre_of_mass(r, m[:, None, :])


def zero_com_projection(dim: int):
    """``project(x, masses=None)``: the position channels of a state ``[B, L, K, 2D]`` projected orthogonally
    onto Σ_k m_k R_k = 0 per frame (:func:`physdiff.physics.particles.zero_com_projection`), where the
    mass-centred data live; velocities untouched. ``masses`` ``[B, K]`` (unit masses when absent)."""

    def project(x: Tensor, masses: Tensor | None = None, **_: Tensor) -> Tensor:
        m = None if masses is None else masses.to(x)[:, None, :]
        return torch.cat([phys.zero_com_projection(x[..., :dim], m), x[..., dim:]], dim=-1)

    return project


def _build_network(model: Any, dim: int) -> nn.Module:
    if isinstance(model, EGNNConfig):
        return SpaceTimeEGNN(
            dim, hidden=model.hidden, layers=model.layers, vector_channels=model.vector_channels, heads=model.heads
        )
    if isinstance(model, TransformerConfig):
        return ParticleTransformer(dim, hidden=model.hidden, layers=model.layers, heads=model.heads)
    raise ValueError(f"model kind {model.kind!r} does not apply to particle tasks; choose 'egnn' or 'transformer'")


@register_task
class ParticleTask(Task):
    kind = "particles"
    builtin_priors = PARTICLE_PRIORS
    table_note = "Floor: the metric of the simulated ground truth against itself (conservation metrics)."

    # ------------------------------------------------------------------------------------- data
    def load(self, cache_dir: Path, progress: bool = True) -> ParticleData:
        d = self.cfg.data
        if d.path:
            return self.check_data(load_particles(d.path, d.system))
        tag = "".join(f"_{k}{v}" for k, v in sorted(d.settings.items()))
        path = Path(cache_dir) / f"{d.system}_n{d.n}_seed{d.seed}{tag}.h5"
        if not path.is_file():
            summary = simulate_to_file(d.system, path, d.n, d.seed, progress=progress, **d.settings)
            if progress:
                print(f"simulated {d.n} {d.system} trajectories in {summary['seconds']:.1f} s → {path}")
        return self.check_data(load_particles(path))

    @staticmethod
    def check_data(data: ParticleData) -> ParticleData:
        """Refuse data the task cannot learn from: fewer than 2 particles or 3 frames (the Newton residual
        needs interior frames), or non-finite / non-positive physical constants."""
        n, frames, k, _ = data.shape
        where = data.path or "data"
        if not data.splits:  # a user's file without splits: the default seeded split, said aloud
            data.splits = make_splits(n, 0)
            log.info(
                "note (%s): no 'splits' group; using the default seeded split (train/val/test = %d/%d/%d)",
                where,
                *(len(data.splits[k]) for k in ("train", "val", "test")),
            )
        if k < 2:
            raise ValueError(f"{where}: 'positions' has K = {k} particle(s); an interacting system needs K >= 2")
        if frames < 3:
            raise ValueError(f"{where}: 'positions' has L = {frames} frame(s); trajectories need L >= 3 frames")
        for name, value in data.constants.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{where}: attribute {name!r} = {value!r}; the constant must be finite and > 0")
        return data

    def fit_scaling(self, train: ParticleData) -> ParticleScaling:
        r = train.positions - _com(train.positions, train.masses)
        with np.errstate(over="ignore", invalid="ignore"):
            scaling = ParticleScaling(positions=float(r.std()), velocities=float(train.velocities.std()))
        for key, value in scaling.to_dict().items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"{train.path or 'data'}: the training split's {key} have standard deviation {value:.3g}; the "
                    "model needs a finite, positive scale (are the values overflowing, or all equal?)"
                )
        return scaling

    def scaling_from_dict(self, d: Mapping[str, Any]) -> ParticleScaling:
        return ParticleScaling(**d)

    def to_tensors(
        self, data: ParticleData, scaling: ParticleScaling, subtask: str, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        r = (data.positions - _com(data.positions, data.masses)) / scaling.positions
        v = data.velocities / scaling.velocities
        x0 = torch.from_numpy(np.concatenate([r, v], axis=-1)).to(dtype)
        mask = torch.zeros_like(x0)
        if subtask == "prediction":
            mask[:, 0] = 1.0  # the first frame is given
        out = {"x0": x0, "mask": mask, "masses": torch.from_numpy(data.masses).to(dtype)}
        if data.edges is not None:
            out["edges"] = torch.from_numpy(data.edges).to(dtype)
        return out

    def from_tensors(self, x: Tensor, data: ParticleData, scaling: ParticleScaling) -> Samples:
        """Undo scaling and centring: the centre of mass moves uniformly from the known first frame."""
        d = data.positions.shape[-1]
        x = x.detach().cpu().double().numpy()
        r = x[..., :d] * scaling.positions
        v = x[..., d:] * scaling.velocities
        m = data.masses
        com0 = _com(data.positions[:, :1], m)  # [N, 1, 1, D]
        vcm = (m[:, :, None] * data.velocities[:, 0]).sum(1) / m.sum(1, keepdims=True)  # [N, D]
        steps = np.arange(r.shape[1])[None, :, None, None] * data.constants["dt"]
        return {"positions": r + com0 + steps * vcm[:, None, None, :], "velocities": v}

    def describe(self, data: ParticleData) -> dict[str, Any]:
        """What a data file holds, for a run's ``config.yaml``: sizes and physical constants."""
        n, frames, k, d = data.shape
        return {"n": n, "settings": {"n_frames": frames, "n_particles": k, "n_dims": d, **data.constants}}

    # ------------------------------------------------------------------------------ components
    def build_denoiser(self, scaling: ParticleScaling, example: Mapping[str, Tensor]) -> Denoiser:
        """Network + schedule + parametrisation, with noise kept in the zero-CoM subspace.

        The network loads checkpoints of aux-head prior runs too: it skips the auxiliary heads' weights
        unless heads were attached to it (:func:`physdiff.priors.aux_head.attach_aux_heads`).
        """
        dim = example["x0"].shape[-1] // 2
        return Denoiser(
            ignore_aux_head_weights(_build_network(self.cfg.model, dim)),
            make_schedule(self.cfg.diffusion.schedule, process=self.cfg.diffusion.process),
            prediction=self.cfg.diffusion.prediction,
            project=zero_com_projection(dim),
        )

    def _prior_kwargs(self, cls: type[Prior], data: ParticleData, scaling: ParticleScaling) -> dict[str, Any]:
        """Unit conversion and the data's constants for a particle prior class."""
        if not issubclass(cls, ParticlePrior):
            return {}
        kw: dict[str, Any] = {"dim": data.positions.shape[-1], "scale": (scaling.positions, scaling.velocities)}
        names = {f.name for f in dataclasses.fields(cls)}
        kw |= {k: v for k, v in data.constants.items() if k in names}
        return kw

    def make_prior(
        self, spec: PriorConfig, train: ParticleData, scaling: ParticleScaling, tensors: Mapping[str, Tensor]
    ) -> Prior:
        if spec.variant not in PRIOR_VARIANTS:
            raise ValueError(f"prior {spec.name!r}: unknown variant {spec.variant!r}; choose one of {PRIOR_VARIANTS}")
        common = {"weight": spec.weight, "time_weight": self.time_weight(spec), **spec.options}
        user = self.prior_class(spec)
        if user is not None:
            prior = user(name=spec.name, **self._prior_kwargs(user, train, scaling), **common)
        else:
            prior = make_prior(
                spec.name,
                train.system,
                constants=train.constants,
                dim=train.positions.shape[-1],
                scale=(scaling.positions, scaling.velocities),
                **common,
            )
        if spec.variant == "aux_head":
            if not hasattr(self.cfg.model, "hidden"):
                raise ValueError(f"prior {spec.name!r}: variant 'aux_head' needs a network with hidden states")
            prior = make_aux_head_prior(prior, self.cfg.model.hidden)
            ctx = self.context(tensors)
            prior.fit_normalisation(tensors["x0"].float(), **{k: v.float() for k, v in ctx.items()})
        return prior

    def make_constraint_prior(self, name: str, train: ParticleData, scaling: ParticleScaling) -> Prior:
        user = self.prior_class(PriorConfig(name=name))
        if user is not None:
            return user(name=name, **self._prior_kwargs(user, train, scaling))
        return make_prior(
            name,
            train.system,
            constants=train.constants,
            dim=train.positions.shape[-1],
            scale=(scaling.positions, scaling.velocities),
        )

    def check_tolerance(self, prior: Prior) -> dict[str, float]:
        return {"tol": 1e-4}

    def augment(self) -> Augment | None:
        """Random orthogonal transformation of a whole batch (the non-equivariant baseline's training)."""
        if not getattr(self.cfg.model, "rotation_augmentation", False):
            return None

        def rotate(batch: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
            x0 = batch["x0"]
            q = random_orthogonal(x0.shape[0], x0.shape[-1] // 2, generator=g, dtype=x0.dtype)
            return {**batch, "x0": rotate_particle_state(x0, q)}

        return rotate

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, samples: Samples, reference: ParticleData, subtask: str) -> dict[str, np.ndarray]:
        """Every metric of :mod:`physdiff.evaluation.particle_metrics` (the table shows ``cfg.metrics``)."""
        return per_sample_metrics(samples["positions"], samples["velocities"], reference)

    def floor(self, reference: ParticleData) -> dict[str, float]:
        return floor_metrics(reference)

    def write_samples(
        self,
        path: Path,
        samples: Samples,
        reference: ParticleData,
        indices: np.ndarray,
        split: str,
        subtask: str = "prediction",
    ) -> Path:
        """Generated trajectories in the data layout, with ``source_indices`` into the reference file, the
        reference's provenance (:mod:`physdiff.data.provenance`) and, as ``floor_*``, the true floor: the
        conservation metrics of the reference rows themselves (not of the samples)."""
        arrays = {
            "positions": samples["positions"],
            "velocities": samples["velocities"],
            "masses": reference.masses,
            "source_indices": np.asarray(indices, dtype=np.int64),
        }
        if reference.edges is not None:
            arrays["edges"] = reference.edges
        attrs = {"system": reference.system, **reference.constants, "generated": True, "task": subtask}
        attrs |= {f"floor_{k}": v for k, v in floor_metrics(reference).items()}
        attrs |= {
            "reference_path": str(Path(reference.path).resolve()) if reference.path else "",
            "reference_split": split,
            "reference_sha256": fingerprint(
                reference.positions, reference.velocities, reference.masses, reference.edges
            ),
        }
        return write_particles(path, arrays, attrs, splits=None, floor=False)

    def read_samples(self, path: Path, max_samples: int | None = None) -> Samples:
        s = load_particles(path)
        keep = slice(None, max_samples)
        return {
            "positions": s.positions[keep],
            "velocities": s.velocities[keep],
            "source_indices": s.source_indices[keep],
        }

    def condition_from(self, condition: Mapping[str, Any], template: ParticleData) -> ParticleData:
        """Initial frames to sample from: ``positions``, ``velocities`` ``[N, K, D]`` (or ``[N, 1, K, D]``),
        ``masses`` ``[N, K]`` (default 1) and, for springs, ``edges`` ``[N, K, K]``. The frame count and the
        constants are the template's (the run's data); the generated frames are filled with the first frame
        (placeholders: only frame 0 is known)."""
        r0 = np.asarray(condition["positions"], dtype=np.float64)
        v0 = np.asarray(condition["velocities"], dtype=np.float64)
        if r0.ndim == 4:
            r0, v0 = r0[:, 0], v0[:, 0]
        k, d = template.positions.shape[2:]
        if r0.ndim != 3 or r0.shape[1:] != (k, d) or v0.shape != r0.shape:
            raise ValueError(
                f"condition: positions and velocities must be first frames [N, {k}, {d}], got {r0.shape}, {v0.shape}"
            )
        n = r0.shape[0]
        m = np.asarray(condition.get("masses", np.ones((n, k))), dtype=np.float64)
        edges = condition.get("edges")
        if template.edges is not None and edges is None:
            raise ValueError(f"condition: {template.system} needs the spring graph 'edges' [N, {k}, {k}]")
        frames = template.positions.shape[1]
        return ParticleData(
            positions=np.repeat(r0[:, None], frames, axis=1),
            velocities=np.repeat(v0[:, None], frames, axis=1),
            masses=m,
            edges=None if edges is None else np.asarray(edges, dtype=np.float64),
            system=template.system,
            constants=dict(template.constants),
        )

    def plot(
        self,
        out_dir: Path,
        reference: ParticleData,
        generated: Mapping[str, Mapping[str, Samples]],
        *,
        per_seed=None,
        constraints=None,
        training_logs=None,
    ) -> list[Path]:
        from physdiff.evaluation.plots import plot_particle_results

        first = {arm: s[next(iter(s))] for arm, s in generated.items() if s}
        return plot_particle_results(
            out_dir,
            reference,
            {arm: (s["positions"], s["velocities"]) for arm, s in first.items()},
            per_seed=per_seed,
            constraints=constraints,
            training_logs=training_logs,
        )

    # ------------------------------------------------------------------------------ file-level
    @classmethod
    def recognises(cls, path: Path) -> bool:
        import h5py

        with h5py.File(path, "r") as f:
            return "positions" in f and "velocities" in f

    @classmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        return evaluate_files(samples, reference, system=system)

    @classmethod
    def systems(cls) -> tuple[str, ...]:
        return PARTICLE_SYSTEMS

    @classmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        return simulate_to_file(system, path, n, seed, progress=True, **settings)
