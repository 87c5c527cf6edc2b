"""The particle task (three-body, five-spring, charged, generic): generate a trajectory given its first frames.

Inside the model a trajectory is x ``[L, K, 2D]`` = (R, V): positions centred per frame on the mass-weighted
centre of mass (the subspace Σ_k m_k R_k = 0 where a VP process keeps translation invariance, method.md
§2) and both channels divided by one scalar scale each (a scalar keeps rotation equivariance). Outputs are
mapped back exactly: the centre of mass of a closed system moves uniformly, CoM(l) = CoM(k−1) +
(l − k + 1)·dt·P(k−1)/M from the last given frame k − 1, and the given frames are known. Context: ``masses``
``[N, K]``, for springs ``edges`` ``[N, K, K]``, for charged particles ``charges`` ``[N, K]`` (the networks
read them as the pair feature q_i q_j on their edges, EGNN's and GeoTDM's choice).

**Given frames.** Prediction conditions on the first k frames (``known_frames``, default 1; GeoTDM's
protocol: 10 of 30): they are masked as known, the centre of mass is continued from frame k − 1 and the
metrics start at frame k (config key ``known_frames``).

**Positions-only state** (``model.state: positions``; default ``positions+velocities``): the network
generates R only, ``[L, K, D]`` (mass-centred and scaled as above); the given frames' positions are the
condition (their velocities are not given). Velocities, for the metrics, the priors and the samples files,
are R differenced in time with the file's ``dt`` (:func:`physdiff.physics.finite_difference.velocities_from_positions`:
central inside, second-order one-sided at the two ends). The centre of mass of generated frames continues
the given frames' own uniformly, at the least-squares velocity of their centres of mass (k ≥ 2 given
frames; with k = 1 nothing says how it moves and it stays where it was given).

**K draws per condition** (GeoTDM's min- and average ADE / FDE, :mod:`physdiff.evaluation.geotdm`): when the
metrics name ``min_ade``, ``min_fde``, ``ave_ade`` or ``ave_fde``, :meth:`ParticleTask.draws_per_condition`
says how many samples of each condition to draw (``sample.draws``, at least 2 for these metrics) and
:meth:`ParticleTask.evaluate` takes the further draws as ``draws=[...]``; :func:`evaluate_geotdm` draws and
scores them for a trained model.

**Generic files** (``--system generic``: a file of unknown physics, conservative or not): the frame spacing
``dt`` (the file's, else estimated) and every numeric attribute as a constant (a user prior's dataclass fields of
the same name get them), metrics traj/vel/momentum and ``law:<name>`` of each prior. A built-in prior is offered
only where the data obey its law: each arm's priors are checked on the ground truth relative to the law's scale
and refused for that arm alone (momentum under an external force); the no-prior arm is never checked. Data
whose momentum is not conserved are modelled in absolute positions (``ParticleScaling.centred`` = false), not
centred on the centre of mass. A user's file without a ``splits`` group gets the default split written next to
it as ``<file>.splits.json`` (:func:`physdiff.data.particles_h5.side_splits`); the file is never modified.
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

from physdiff.config import ConfigError
from physdiff.data.augment import random_orthogonal, rotate_particle_state, rotate_vectors
from physdiff.data.particles_h5 import (
    ParticleData,
    load_particles,
    make_splits,
    side_splits,
    side_splits_path,
    simulate_to_file,
    write_particles,
)
from physdiff.data.provenance import fingerprint
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.evaluation.geotdm import GEOTDM_K, draw_metrics
from physdiff.evaluation.mmd import MMD_KEYS, particle_generation_mmd, particle_mmd_floor
from physdiff.evaluation.particle_metrics import (
    METRIC_KEYS,
    check_particle_reference,
    differenced_floor_metrics,
    evaluate_files,
    floor_metrics,
    per_sample_metrics,
)
from physdiff.experiments.config import EGNNConfig, ExperimentConfig, PriorConfig, TransformerConfig
from physdiff.experiments.task import Augment, Samples, Task, file_constants, register_task
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.transformer import ParticleTransformer
from physdiff.physics import particles as phys
from physdiff.physics.finite_difference import velocities_from_positions
from physdiff.priors.aux_head import PRIOR_VARIANTS, ignore_aux_head_weights, make_aux_head_prior
from physdiff.priors.base import Prior, PriorNotApplicable
from physdiff.priors.particles import PARTICLE_PRIORS, ParticlePrior, make_prior
from physdiff.progress import progress_enabled
from physdiff.systems.registry import SIMULATED_SYSTEMS, get_system

__all__ = [
    "DRAW_METRICS",
    "ParticleScaling",
    "ParticleTask",
    "draws",
    "evaluate_geotdm",
    "known_frames",
    "positions_only",
    "zero_com_projection",
]

log = logging.getLogger("physdiff")


@dataclass
class ParticleScaling:
    """Scalar scales of positions and velocities (stored with the run, undone on output), and whether the
    positions are centred on the centre of mass per frame (``centred``: a closed system's data; a generic file
    whose centre of mass does not move uniformly, e.g. under an external force, keeps absolute positions)."""

    positions: float
    velocities: float
    centred: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _com(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Centre of mass per frame: r [N, L, K, D], m [N, K] → [N, L, 1, D]."""
    return phys.centre_of_mass(r, m[:, None, :])


#: metrics over several draws per condition (min and mean over the draws, :mod:`physdiff.evaluation.geotdm`)
DRAW_METRICS: tuple[str, ...] = ("min_ade", "min_fde", "ave_ade", "ave_fde")


def known_frames(cfg: ExperimentConfig) -> int:
    """The frames given in the prediction sub-task (``cfg.known_frames``; 1: the first frame; GeoTDM: 10)."""
    return int(cfg.known_frames)


def positions_only(cfg: ExperimentConfig) -> bool:
    """Whether the network generates positions only (``model.state: positions``)."""
    return getattr(cfg.model, "state", "positions+velocities") == "positions"


def _given_com_velocity(com: np.ndarray, dt: float) -> np.ndarray:
    """The least-squares velocity of the given frames' centres of mass ``com`` ``[N, k, 1, D]`` → ``[N, D]``
    (exact for uniform motion; zero for a single given frame)."""
    k = com.shape[1]
    if k < 2:
        return np.zeros((com.shape[0], com.shape[-1]))
    t = (np.arange(k) - (k - 1) / 2.0) * dt
    return np.einsum("l,nld->nd", t, com[:, :, 0]) / float(t @ t)


def _differenced(r: np.ndarray, dt: float) -> np.ndarray:
    """Velocities ``[N, L, K, D]`` of positions ``r`` by :func:`velocities_from_positions` (float64)."""
    return velocities_from_positions(torch.from_numpy(np.ascontiguousarray(r, dtype=np.float64)), dt).numpy()


def draws(cfg: ExperimentConfig) -> int:
    """Samples drawn per condition (``cfg.sample.draws``; GeoTDM: K = 5)."""
    return int(cfg.sample.draws)


def _pair_features(edges: Tensor | None, charges: Tensor | None) -> Tensor | None:
    """The networks' edge attribute: the spring graph, the charge products q_i q_j (zero diagonal), or
    their sum when a (generic) file holds both (injective for 0/1 edges and ±1 charges)."""
    if charges is None:
        return edges
    q = charges.to(torch.get_default_dtype() if not charges.is_floating_point() else charges.dtype)
    qq = q[:, :, None] * q[:, None, :]
    qq = qq * (1.0 - torch.eye(q.shape[-1], dtype=qq.dtype, device=qq.device))
    return qq if edges is None else edges.to(qq) + qq


class _ChargesOnEdges:
    """Mixin of a particle network that takes ``charges`` ``[B, K]`` as context and reads them as the pair
    feature q_i q_j of its edges (EGNN's and GeoTDM's charged N-body input); without charges it is the
    network itself (same parameters, same outputs)."""

    def forward(
        self,
        x_t: Tensor,
        noise: Tensor,
        known: Tensor,
        mask: Tensor,
        edges: Tensor | None = None,
        masses: Tensor | None = None,
        charges: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        return super().forward(  # type: ignore[misc]
            x_t, noise, known, mask, edges=_pair_features(edges, charges), masses=masses, return_hidden=return_hidden
        )


class ChargedSpaceTimeEGNN(_ChargesOnEdges, SpaceTimeEGNN):
    """:class:`SpaceTimeEGNN` that also takes ``charges`` (on its edges)."""


class ChargedParticleTransformer(_ChargesOnEdges, ParticleTransformer):
    """:class:`ParticleTransformer` that also takes ``charges`` (as its edge bias)."""


def zero_com_projection(dim: int):
    """``project(x, masses=None)``: the position channels of a state ``[B, L, K, 2D]`` (or of a positions-only
    state ``[B, L, K, D]``) projected orthogonally onto Σ_k m_k R_k = 0 per frame
    (:func:`physdiff.physics.particles.zero_com_projection`), where the mass-centred data live; velocities
    untouched. ``masses`` ``[B, K]`` (unit masses when absent)."""

    def project(x: Tensor, masses: Tensor | None = None, **_: Tensor) -> Tensor:
        m = None if masses is None else masses.to(x)[:, None, :]
        return torch.cat([phys.zero_com_projection(x[..., :dim], m), x[..., dim:]], dim=-1)

    return project


def _build_network(model: Any, dim: int) -> nn.Module:
    velocities = getattr(model, "state", "positions+velocities") != "positions"
    if isinstance(model, EGNNConfig):
        return ChargedSpaceTimeEGNN(
            dim,
            hidden=model.hidden,
            layers=model.layers,
            vector_channels=model.vector_channels,
            heads=model.heads,
            velocities=velocities,
        )
    if isinstance(model, TransformerConfig):
        return ChargedParticleTransformer(
            dim, hidden=model.hidden, layers=model.layers, heads=model.heads, velocities=velocities
        )
    raise ValueError(f"model kind {model.kind!r} does not apply to particle tasks; choose 'egnn' or 'transformer'")


@register_task
class ParticleTask(Task):
    kind = "particles"
    builtin_priors = PARTICLE_PRIORS
    metric_names = (*METRIC_KEYS, *DRAW_METRICS, *MMD_KEYS)

    @property
    def table_note(self) -> str:  # type: ignore[override]
        """The table's footnote: what the floor is (and, for charged particles, what EGNN's force clip does to it;
        with several draws per condition, what min/ave ADE/FDE are)."""
        note = "Floor: the metric of the simulated ground truth against itself (conservation metrics)."
        if positions_only(self.cfg):
            note = (
                "Positions-only state: velocities are the generated positions differenced in time (central, "
                "second-order one-sided at the ends). Floor: the true positions with differenced velocities "
                "against the ground truth."
            )
        if self.cfg.data.system == "charged":
            note += (
                " Charged particles: EGNN's force clip makes momentum and energy inexact on the trajectories it "
                "touched (results.json floor: clip_fraction and *_unclipped)."
            )
        if any(k in self.cfg.metrics for k in DRAW_METRICS):
            note += (
                f" min/ave ADE/FDE: over the {draws(self.cfg)} draws of each condition, the first "
                f"{self.known_frames} frames given (GeoTDM's protocol); the other metrics on the first draw."
            )
        return note

    @property
    def known_frames(self) -> int:
        """Frames given in the prediction sub-task (:func:`known_frames`)."""
        return known_frames(self.cfg)

    def start(self, subtask: str) -> int:
        """The first generated frame of a sub-task: ``known_frames`` for prediction, 1 for generation (frame 0
        is the energy and momentum reference)."""
        return self.known_frames if subtask == "prediction" else 1

    # ------------------------------------------------------------------------------------- data
    def load(self, cache_dir: Path, progress: bool = True) -> ParticleData:
        d = self.cfg.data
        if d.path:
            return self.check_data(load_particles(d.path, d.system, max_bytes=d.max_bytes, max_samples=d.max_samples))
        if not get_system(d.system).has_forces:
            raise ValueError(
                f"the {d.system!r} system is not simulated: pass a data file (--data FILE, data.path=FILE)"
            )
        settings = dict(d.settings)
        tag = "".join(f"_{k}{v}".replace(" ", "") for k, v in sorted(settings.items()))
        path = Path(cache_dir) / f"{d.system}_n{d.n}_seed{d.seed}{tag}.h5"
        if not path.is_file():
            summary = simulate_to_file(d.system, path, d.n, d.seed, progress=progress_enabled(progress), **settings)
            if progress:
                print(f"simulated {d.n} {d.system} trajectories in {summary['seconds']:.1f} s → {path}")
        return self.check_data(load_particles(path))

    def check_data(self, data: ParticleData) -> ParticleData:
        """Refuse data the task cannot learn from: fewer than 2 particles or 3 frames (the Newton residual
        needs interior frames), no generated frame after the given ones, or non-finite / non-positive
        physical constants. A file without splits gets the default split, kept next to it
        (``<file>.splits.json``); a generic file's estimated frame spacing is said aloud."""
        n, frames, k, _ = data.shape
        where = data.path or "data"
        if k < 2:
            raise ValueError(f"{where}: 'positions' has K = {k} particle(s); an interacting system needs K >= 2")
        if frames < 3:
            raise ValueError(f"{where}: 'positions' has L = {frames} frame(s); trajectories need L >= 3 frames")
        given = self.known_frames
        if given > frames - 1:
            raise ValueError(
                f"{where}: known_frames = {given} leaves no frame to generate of L = {frames}; "
                f"choose at most {frames - 1}"
            )
        for name, value in data.constants.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{where}: attribute {name!r} = {value!r}; the constant must be finite and > 0")
        if data.attrs.get("dt_estimated"):
            misfit = float(data.attrs.get("dt_misfit", float("nan")))
            log.info(
                "note (%s): no 'dt' attribute; the frame spacing dt = %.6g is estimated from the centre-of-mass "
                "motion (relative misfit %.2g); it places the centre of mass of generated frames",
                where,
                data.constants["dt"],
                misfit,
            )
            if misfit > 1e-3:
                log.warning(
                    "warning (%s): the centre of mass does not move as the velocities say (misfit %.2g): external "
                    "forces or velocities that are not time derivatives; the centre of mass of generated frames is "
                    "continued from the last given frame and may drift",
                    where,
                    misfit,
                )
        if not data.splits:
            self._default_splits(data)  # after every check: nothing is written next to a file that is refused
        return data

    @staticmethod
    def _default_splits(data: ParticleData) -> None:
        """A user's file without splits: the default seeded split, kept next to it and said aloud."""
        n, where = data.shape[0], data.path or "data"
        if n < 3:
            raise ValueError(f"{where}: N = {n} trajectories; a train/val/test split needs at least 3")
        status = "in-memory"
        if data.path:
            data.splits, status = side_splits(data.path, n)
        else:
            data.splits = make_splits(n, 0)
        kept = {
            "read": f"read from {side_splits_path(where)}",
            "written": f"written to {side_splits_path(where)} (the data file is not modified)",
            "rewritten": f"rewritten to {side_splits_path(where)}, which described another file",
            "in-memory": "not kept (its folder is not writable)" if data.path else "in memory",
        }[status]
        log.info(
            "note (%s): no 'splits' group; using the default seeded split (train/val/test = %d/%d/%d), %s",
            where,
            *(len(data.splits[s]) for s in ("train", "val", "test")),
            kept,
        )

    def fit_scaling(self, train: ParticleData) -> ParticleScaling:
        centred = self.closed(train)
        r = train.positions - _com(train.positions, train.masses) if centred else train.positions
        with np.errstate(over="ignore", invalid="ignore"):
            scaling = ParticleScaling(
                positions=float(r.std()), velocities=float(train.velocities.std()), centred=centred
            )
        if not centred:
            log.info(
                "note (%s): the momentum is not conserved (external forces): positions are modelled as they are, "
                "not centred on the centre of mass",
                train.path or "data",
            )
        for key, value in {"positions": scaling.positions, "velocities": scaling.velocities}.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"{train.path or 'data'}: the training split's {key} have standard deviation {value:.3g}; the "
                    "model needs a finite, positive scale (are the values overflowing, or all equal?)"
                )
        return scaling

    def scaling_from_dict(self, d: Mapping[str, Any]) -> ParticleScaling:
        keys = {f.name for f in dataclasses.fields(ParticleScaling)}
        if not isinstance(d, Mapping) or not {"positions", "velocities"} <= set(d) <= keys:
            raise ValueError(f"a particle scaling needs the keys {sorted(keys)} ('centred' optional), got {d!r}")
        if not isinstance(d.get("centred", True), bool):
            raise ValueError(f"scale 'centred' = {d['centred']!r} must be true or false")
        for key, value in d.items():
            if key == "centred":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"scale {key!r} = {value!r} must be a finite number > 0")
        return ParticleScaling(**d)

    def to_tensors(
        self, data: ParticleData, scaling: ParticleScaling, subtask: str, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        r = data.positions - _com(data.positions, data.masses) if scaling.centred else data.positions
        r = r / scaling.positions
        if positions_only(self.cfg):
            x0 = torch.from_numpy(r).to(dtype)  # the given frames' positions are the condition
        else:
            v = data.velocities / scaling.velocities
            x0 = torch.from_numpy(np.concatenate([r, v], axis=-1)).to(dtype)
        mask = torch.zeros_like(x0)
        if subtask == "prediction":
            mask[:, : self.known_frames] = 1.0  # the first frames are given
        out = {"x0": x0, "mask": mask, "masses": torch.from_numpy(data.masses).to(dtype)}
        if data.edges is not None:
            out["edges"] = torch.from_numpy(data.edges).to(dtype)
        if data.charges is not None:
            out["charges"] = torch.from_numpy(data.charges).to(dtype)
        return out

    def from_tensors(self, x: Tensor, data: ParticleData, scaling: ParticleScaling) -> Samples:
        """Undo scaling and centring: the centre of mass is the data's on the given frames 0 … k−1 and moves
        uniformly from the last of them, CoM(l) = CoM(k−1) + (l − k + 1)·dt·P(k−1)/M (exact for a closed
        system; the force clip of charged data makes it approximate on clipped trajectories). A positions-only
        state (:func:`positions_only`) goes through :meth:`_from_positions`."""
        if positions_only(self.cfg):
            return self._from_positions(x, data, scaling)
        d = data.positions.shape[-1]
        x = x.detach().cpu().double().numpy()
        r = x[..., :d] * scaling.positions
        v = x[..., d:] * scaling.velocities
        if not scaling.centred:  # absolute positions, modelled as they are
            return {"positions": r, "velocities": v}
        m = data.masses
        last = min(self.known_frames, r.shape[1]) - 1
        com = _com(data.positions[:, : last + 1], m)  # [N, k, 1, D]: the given frames' own
        vcm = (m[:, :, None] * data.velocities[:, last]).sum(1) / m.sum(1, keepdims=True)  # [N, D]
        steps = np.arange(1, r.shape[1] - last)[None, :, None, None] * data.constants["dt"]
        ahead = com[:, last:] + steps * vcm[:, None, None, :]  # [N, L - k, 1, D]
        return {"positions": r + np.concatenate([com, ahead], axis=1), "velocities": v}

    def _from_positions(self, x: Tensor, data: ParticleData, scaling: ParticleScaling) -> Samples:
        """Positions-only state ``[N, L, K, D]`` → positions (centre of mass: the given frames' own, continued
        uniformly at their least-squares velocity, :func:`_given_com_velocity`) and velocities differenced from
        them with the data's ``dt`` (:func:`velocities_from_positions`)."""
        r = x.detach().cpu().double().numpy() * scaling.positions
        dt = float(data.constants["dt"])
        last = min(self.known_frames, r.shape[1]) - 1
        com = _com(data.positions[:, : last + 1], data.masses)  # [N, k, 1, D]: the given frames' own
        vcm = _given_com_velocity(com, dt)
        steps = np.arange(1, r.shape[1] - last)[None, :, None, None] * dt
        positions = r + np.concatenate([com, com[:, last:] + steps * vcm[:, None, None, :]], axis=1)
        return {"positions": positions, "velocities": _differenced(positions, dt)}

    def describe(self, data: ParticleData) -> dict[str, Any]:
        """What a data file holds, for a run's ``config.yaml``: sizes and physical constants (and the task
        settings the run was given, which the run's config keeps)."""
        n, frames, k, d = data.shape
        return {"n": n, "settings": {"n_frames": frames, "n_particles": k, "n_dims": d, **data.constants}}

    # ------------------------------------------------------------------------------ components
    def build_denoiser(self, scaling: ParticleScaling, example: Mapping[str, Tensor]) -> Denoiser:
        """Network + schedule + parametrisation, with noise kept in the zero-CoM subspace.

        The network loads checkpoints of aux-head prior runs too: it skips the auxiliary heads' weights
        unless heads were attached to it (:func:`physdiff.priors.aux_head.attach_aux_heads`).
        """
        dim = example["x0"].shape[-1] // (1 if positions_only(self.cfg) else 2)
        return Denoiser(
            ignore_aux_head_weights(_build_network(self.cfg.model, dim)),
            make_schedule(self.cfg.diffusion.schedule, process=self.cfg.diffusion.process),
            prediction=self.cfg.diffusion.prediction,
            project=zero_com_projection(dim) if scaling.centred else None,
        )

    def _prior_kwargs(self, cls: type[Prior], data: ParticleData, scaling: ParticleScaling) -> dict[str, Any]:
        """Unit conversion and the data's constants for a particle prior class."""
        if not issubclass(cls, ParticlePrior):
            return file_constants(cls, {**data.attrs, **data.constants})
        kw: dict[str, Any] = {"dim": data.positions.shape[-1], "scale": (scaling.positions, scaling.velocities)}
        kw |= self._state_kwargs(data)
        return kw | file_constants(cls, {**data.attrs, **data.constants})

    def make_prior(
        self, spec: PriorConfig, train: ParticleData, scaling: ParticleScaling, tensors: Mapping[str, Tensor]
    ) -> Prior:
        if spec.variant not in PRIOR_VARIANTS:
            raise ValueError(f"prior {spec.name!r}: unknown variant {spec.variant!r}; choose one of {PRIOR_VARIANTS}")
        common = {"weight": spec.weight, "time_weight": self.time_weight(spec), **spec.options}
        user = self.prior_class(spec)
        if user is not None:
            prior = user(name=spec.name, **{**self._prior_kwargs(user, train, scaling), **common})
        else:
            prior = make_prior(
                spec.name,
                train.system,
                constants=train.constants,
                dim=train.positions.shape[-1],
                scale=(scaling.positions, scaling.velocities),
                **self._state_kwargs(train),
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
            **self._state_kwargs(train),
        )

    def _state_kwargs(self, data: ParticleData) -> dict[str, Any]:
        """A particle prior's state keywords: in the positions-only state, ``state`` and the data's ``dt``
        (its velocities are R differenced in time); none otherwise (the prior's default state)."""
        if not positions_only(self.cfg):
            return {}
        return {"state": "positions", "dt": float(data.constants["dt"])}

    # ------------------------------------------------------------------------- laws on the data
    @staticmethod
    def law_rows(data: ParticleData) -> np.ndarray:
        """The trajectories on which a prior's law is checked against the ground truth: those the force clip
        did not touch (``clip_steps`` = 0) when the file says (the charged data's clipped trajectories conserve
        neither momentum nor energy, a documented floor of the data, not a bug of the prior); else all."""
        if data.clip_steps is not None:
            rows = np.flatnonzero(data.clip_steps == 0)
            return rows if len(rows) else np.arange(data.n)
        return np.arange(data.n)

    @staticmethod
    def closed(data: ParticleData) -> bool:
        """Whether the data's momentum is conserved to 1e-6 relative (the momentum prior's tolerance; float32
        storage rounds at 1e-7) on every trajectory (no external force): then the centre of mass moves uniformly
        and positions are modelled centred on it. Named systems are closed by construction."""
        if get_system(data.system).has_forces:
            return True
        P = np.asarray(phys.linear_momentum(data.velocities, data.masses[:, None]))  # [N, L, D]
        scale = (data.masses[:, None, :] * np.linalg.norm(data.velocities, axis=-1)).sum(-1).max(1)  # [N]
        drift = np.linalg.norm(P - P[:, :1], axis=-1).max(1)
        return bool(np.all(drift <= 1e-6 * np.maximum(scale, np.finfo(np.float64).tiny)))

    def build_priors(self, specs: Any, train: ParticleData, scaling: ParticleScaling) -> list[Prior]:
        """The base class's priors, each checked on the trajectories where the laws hold (:meth:`law_rows`); a
        prior whose law the data do not obey (momentum under an external force) is refused for its arm alone
        (:class:`~physdiff.priors.base.PriorNotApplicable`, naming the law and its measured drift)."""
        lawful = train.subset(self.law_rows(train))
        if not positions_only(self.cfg):
            return super().build_priors(specs, lawful, scaling)
        # positions-only state: whether the data obey a law is a fact of the data, checked in the state that
        # carries their true velocities; differenced velocities meet an energy law only to the stencil's O(dt²)
        # (three-body close encounters: 16 % of the energy's scale), the model's representation, not the physics
        full = dataclasses.replace(self.cfg, model=dataclasses.replace(self.cfg.model, state="positions+velocities"))
        type(self)(full).build_priors(specs, lawful, scaling)
        return super().build_priors(specs, lawful, scaling, check=False)

    def build_constraints(self, train: ParticleData, scaling: ParticleScaling) -> list:
        """The base class's sampling-time constraints, checked on the trajectories where the laws hold (in the
        positions-only state a law on differenced velocities, energy, holds only to the stencil's O(dt²): a
        constraint the ground truth does not meet is refused, saying so)."""
        try:
            return super().build_constraints(train.subset(self.law_rows(train)), scaling)
        except PriorNotApplicable as e:
            if not positions_only(self.cfg):
                raise
            raise PriorNotApplicable(
                f"{e} (model.state = positions: velocities are R differenced in time, on which the ground truth "
                "meets this law only to the stencil's O(dt²) error; leave the constraint out or use "
                "model.state=positions+velocities)"
            ) from None

    def augment(self) -> Augment | None:
        """Random orthogonal transformation of a whole batch (the non-equivariant baseline's training)."""
        if not getattr(self.cfg.model, "rotation_augmentation", False):
            return None

        def rotate(batch: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
            x0 = batch["x0"]
            if positions_only(self.cfg):  # R only: every channel is one D-vector
                q = random_orthogonal(x0.shape[0], x0.shape[-1], generator=g, dtype=x0.dtype)
                return {**batch, "x0": rotate_vectors(x0, q)}
            q = random_orthogonal(x0.shape[0], x0.shape[-1] // 2, generator=g, dtype=x0.dtype)
            return {**batch, "x0": rotate_particle_state(x0, q)}

        return rotate

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        samples: Samples,
        reference: ParticleData,
        subtask: str,
        draws: list[Samples] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every metric of :mod:`physdiff.evaluation.particle_metrics` (the table shows ``cfg.metrics``) on the
        generated frames (after the given ones in prediction) and, with further ``draws`` of the same
        conditions, GeoTDM's ``min_ade`` / ``min_fde`` and ``ave_ade`` / ``ave_fde`` over ``samples`` and the
        draws (:func:`physdiff.evaluation.geotdm.draw_metrics`). ``samples["positions"]`` may also hold the draws
        stacked ``[K, N, L, P, D]`` (then the other metrics are the first draw's)."""
        start = self.start(subtask)
        R, V = np.asarray(samples["positions"]), np.asarray(samples["velocities"])
        stacked = [R] if R.ndim == 4 else list(R)
        if R.ndim == 5:
            R, V = R[0], V[0]
        out = per_sample_metrics(R, V, reference, start=start)
        if any(self.cfg.metrics.get(k) == subtask for k in MMD_KEYS):  # against the held-out trajectories
            ref_R, ref_V = reference.positions[:, start:], reference.velocities[:, start:]
            out |= particle_generation_mmd(R[:, start:], V[:, start:], ref_R, ref_V)
        stacked += [np.asarray(d["positions"]) for d in draws or []]
        if len(stacked) > 1:
            out |= draw_metrics(np.stack(stacked), reference.positions, start)
        elif any(self.cfg.metrics.get(k) == subtask for k in DRAW_METRICS):
            log.warning(
                "%s: one draw per condition; min/ave_ade/fde need %d (draws_per_condition) and are left out",
                subtask,
                self.draws_per_condition(subtask),
            )
        return out

    def law_scaling(self, scaling: ParticleScaling) -> ParticleScaling:
        """Laws are measured on absolute positions: a centre of mass that does not move as the law says counts."""
        return dataclasses.replace(scaling, centred=False)

    def samples_as_data(self, samples: Samples, reference: ParticleData) -> ParticleData:
        R, V = np.asarray(samples["positions"]), np.asarray(samples["velocities"])
        if R.ndim == 5:  # several draws stacked: the first
            R, V = R[0], V[0]
        return dataclasses.replace(reference, positions=R, velocities=V, splits={})

    def draws_per_condition(self, subtask: str) -> int:
        """Samples to draw of each condition of ``subtask``: K (:func:`draws`) when the metrics measure one of
        :data:`DRAW_METRICS` on it, else 1."""
        if any(self.cfg.metrics.get(k) == subtask for k in DRAW_METRICS):
            k = draws(self.cfg)
            if k < 2:
                raise ConfigError(
                    f"metrics {[m for m in DRAW_METRICS if m in self.cfg.metrics]} are taken over several draws per "
                    f"condition: set sample.draws >= 2 (GeoTDM: 5), got {k}"
                )
            return k
        return 1

    def floor(self, reference: ParticleData) -> dict[str, float]:
        """The conservation metrics of the reference against itself from the first generated frame of the
        first sub-task (positions-only state: :meth:`_differenced_floor`), with (charged data) the share of
        clipped trajectories and the floor without them."""
        start = self.start(self.cfg.subtasks[0])
        of = self._differenced_floor if positions_only(self.cfg) else (lambda ref, s: floor_metrics(ref, start=s))
        out = of(reference, start)
        if any(k in self.cfg.metrics for k in MMD_KEYS):
            out |= particle_mmd_floor(reference.positions[:, start:], reference.velocities[:, start:])
        if reference.clip_steps is not None:
            clipped = reference.clip_steps > 0
            out["clip_fraction"] = float(clipped.mean()) if clipped.size else 0.0
            if (~clipped).any() and clipped.any():
                for key, value in of(reference.subset(np.flatnonzero(~clipped)), start).items():
                    out[f"{key}_unclipped"] = value
        return out

    @staticmethod
    def _differenced_floor(reference: ParticleData, start: int) -> dict[str, float]:
        """The positions-only state's floor (:func:`physdiff.evaluation.particle_metrics.differenced_floor_metrics`):
        the true positions with differenced velocities against the ground truth."""
        return differenced_floor_metrics(reference, start=start)

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
        if reference.charges is not None:
            arrays["charges"] = reference.charges
        start = self.start(subtask)
        attrs = {"system": reference.system, **reference.constants, "generated": True, "task": subtask}
        attrs["known_frames"] = start if subtask == "prediction" else 0
        attrs["state"] = getattr(self.cfg.model, "state", "positions+velocities")  # positions: V differenced
        attrs |= {f"floor_{k}": v for k, v in floor_metrics(reference, start=start).items()}
        if reference.clip_steps is not None:
            attrs["reference_clip_fraction"] = float((reference.clip_steps > 0).mean())
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
        """Given frames to sample from: ``positions``, ``velocities`` ``[N, k, K, D]`` (the first k =
        ``known_frames`` frames; ``[N, K, D]`` when k = 1; a positions-only model needs no velocities),
        ``masses`` ``[N, K]`` (default 1), for springs
        ``edges`` ``[N, K, K]`` and for charged particles ``charges`` ``[N, K]``. The frame count and the
        constants are the template's (the run's data); the generated frames are filled with the last given
        frame (placeholders)."""
        given = self.known_frames
        r0 = np.asarray(condition["positions"], dtype=np.float64)
        if positions_only(self.cfg) and "velocities" not in condition:  # not an input of a positions-only model
            v0 = np.zeros_like(r0)
        else:
            v0 = np.asarray(condition["velocities"], dtype=np.float64)
        if r0.ndim == 3 and given == 1:
            r0, v0 = r0[:, None], v0[:, None]
        k, d = template.positions.shape[2:]
        if r0.ndim != 4 or r0.shape[1] < given or r0.shape[2:] != (k, d) or v0.shape != r0.shape:
            want = f"[N, {k}, {d}] (or [N, 1, {k}, {d}])" if given == 1 else f"[N, {given}, {k}, {d}]"
            raise ValueError(
                f"condition: positions and velocities must be first frames {want} (known_frames = {given}), got "
                f"{r0.shape}, {v0.shape}"
            )
        r0, v0 = r0[:, :given], v0[:, :given]
        n = r0.shape[0]
        m = np.asarray(condition.get("masses", np.ones((n, k))), dtype=np.float64)
        edges = condition.get("edges")
        if template.edges is not None and edges is None:
            raise ValueError(f"condition: {template.system} needs the spring graph 'edges' [N, {k}, {k}]")
        charges = condition.get("charges")
        if template.charges is not None and charges is None:
            raise ValueError(f"condition: {template.system} needs the particle charges 'charges' [N, {k}]")
        rest = template.positions.shape[1] - given
        return ParticleData(
            positions=np.concatenate([r0, np.repeat(r0[:, -1:], rest, axis=1)], axis=1),
            velocities=np.concatenate([v0, np.repeat(v0[:, -1:], rest, axis=1)], axis=1),
            masses=m,
            edges=None if edges is None else np.asarray(edges, dtype=np.float64),
            system=template.system,
            constants=dict(template.constants),
            charges=None if charges is None else np.asarray(charges, dtype=np.float64),
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

    def check_samples_reference(
        self, samples: Samples, reference: ParticleData, subtask: str, *, samples_name: str, reference_name: str
    ) -> None:
        known = self.known_frames if subtask == "prediction" else 0
        check_particle_reference(
            samples_name, reference_name, samples, reference, known, None, positions_only(self.cfg)
        )

    # ------------------------------------------------------------------------------ file-level
    @classmethod
    def recognises(cls, path: Path) -> bool:
        import h5py

        with h5py.File(path, "r") as f:
            return "positions" in f and "velocities" in f

    @classmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        """``physdiff evaluate``; ``draws=[files]``: further samples files of the same conditions;
        ``protocol="geotdm"``, ``k``: GeoTDM's min- and average ADE / FDE over K draws per condition
        (:func:`physdiff.evaluation.particle_metrics.evaluate_files`)."""
        return evaluate_files(
            samples,
            reference,
            system=system,
            draws=options.get("draws") or (),
            protocol=options.get("protocol"),
            k=options.get("k"),
        )

    @classmethod
    def systems(cls) -> tuple[str, ...]:
        """The systems ``physdiff simulate`` simulates (``generic`` reads a user's file)."""
        return SIMULATED_SYSTEMS

    @classmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        return simulate_to_file(system, path, n, seed, progress=progress_enabled(), **settings)  # off with --quiet


# ------------------------------------------------------------------------------------------ GeoTDM protocol
def evaluate_geotdm(
    task: ParticleTask,
    den: Denoiser,
    prep: Any,
    k: int = GEOTDM_K,
    seed: int = 0,
    *,
    subtask: str = "prediction",
    device: torch.device = torch.device("cpu"),
) -> dict[str, np.ndarray]:
    """GeoTDM's protocol for a trained denoiser: K draws of every evaluation condition (sampling seeds
    :func:`physdiff.evaluation.geotdm.draw_seed`, draw 0 = the ordinary samples of ``seed``), scored per case.

    Args:
        task: the particle task (its ``known_frames`` are given; GeoTDM's presets: 10 of 30).
        den: the trained denoiser (:func:`physdiff.experiments.harness.train_arm` / ``load_arm``).
        prep: the harness's :class:`~physdiff.experiments.harness.Prepared` (evaluation split, scaling).
        k: draws per condition (GeoTDM: 5).
        seed: the sampling seed of draw 0.

    Returns:
        Per case ``[N]``: ``min_ade``, ``min_fde``, ``ave_ade``, ``ave_fde`` and the other metrics of the first
        draw (:meth:`ParticleTask.evaluate`).
    """
    from physdiff.evaluation.geotdm import draw_seed
    from physdiff.experiments.harness import sample_tensors

    if k < 1:
        raise ValueError(f"k (draws per condition) must be >= 1, got {k}")
    tensors = task.to_tensors(prep.evaluation, prep.scaling, subtask)
    out = []
    for j in range(k):
        x = sample_tensors(den, tensors, task.cfg.sample, draw_seed(seed, j), device=device)
        out.append(task.from_tensors(x, prep.evaluation, prep.scaling))
    metrics = task.evaluate(out[0], prep.evaluation, subtask, draws=out[1:])
    if k == 1:
        metrics |= draw_metrics(out[0]["positions"], prep.evaluation.positions, task.start(subtask))
    return metrics
