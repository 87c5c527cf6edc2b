"""The public run API: load a trained run, sample it from Python, evaluate the samples.

```python
import physdiff
run = physdiff.load_run("runs/tb")                   # config, scaling, EMA weights, task
out = run.sample(condition=first_frames, steps=25)   # physical units, same dict layout as samples files
metrics = run.evaluate(out, reference="data/three_body.h5")
```

``condition`` is what the task conditions on, in physical units: for particles the first frame
(``positions``, ``velocities`` ``[N, K, D]``, ``masses`` ``[N, K]``, and ``edges`` ``[N, K, K]`` for springs);
for fields the initial condition ``u0`` (time-dependent systems) or the coefficient field (Darcy's ``a``).
Without a condition, ``run.sample(n=...)`` samples the conditions of the run's evaluation split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physdiff.config import from_dict, load_yaml_dict, to_dict
from physdiff.evaluation.statistics import summarize_samples
from physdiff.experiments.config import ConstraintConfig, ExperimentConfig
from physdiff.experiments.harness import Prepared, configure, load_arm, prepare, sample_tensors
from physdiff.experiments.task import make_task
from physdiff.outputs import read_json
from physdiff.priors.sampling import make_method
from physdiff.training.checkpoint import check_config_matches, load_latest_checkpoint
from physdiff.training.distributed import DistInfo, resolve_device

__all__ = ["Run", "load_run"]


@dataclass
class Run:
    """A trained run folder (``physdiff train`` or one arm/seed of ``physdiff reproduce``)."""

    path: Path
    config: ExperimentConfig
    arm: str
    seed: int
    prepared: Prepared
    denoiser: torch.nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: under torchrun: the ranks share the sampling batches and every rank receives all samples
    dist_info: DistInfo = field(default_factory=DistInfo)

    @property
    def task(self):
        return self.prepared.task

    @property
    def data(self):
        """The run's data set (the template of conditions: grid, frames, constants)."""
        return self.prepared.data

    def _constraints(self, constraints: Sequence[Any] | None):
        out = []
        for c in constraints or []:
            c = c if isinstance(c, ConstraintConfig) else from_dict(ConstraintConfig, dict(c))
            priors = [
                self.task.make_constraint_prior(name, self.prepared.train, self.prepared.scaling) for name in c.priors
            ]
            make_method(priors, **c.hook_options()).check_process(self.config.diffusion.process)
            out.append((c, priors))
        if len(out) > 1:
            raise ValueError("run.sample takes one sampling-time constraint at a time (list several priors in it)")
        return out[0] if out else None

    def sample(
        self,
        condition: Mapping[str, Any] | None = None,
        *,
        data: Any = None,
        n: int | None = None,
        subtask: str = "prediction",
        sampler: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
        constraints: Sequence[Any] | None = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Generate samples in physical units, in the layout of the task's sample files.

        Args:
            condition: the conditions (module docstring); ``None``: the first ``n`` of the evaluation split
                (their row numbers are returned as ``source_indices``).
            data: instead of ``condition``, a data set of the task (e.g. another file's) whose conditions are
                used (its first ``n`` samples; ``source_indices`` number its rows).
            subtask: ``prediction`` (given the condition) or ``generation`` (unconditional).
            sampler, steps: override the run's sampler settings.
            seed: the sampling seed (default: the run's).
            constraints: one sampling-time constraint, e.g. ``[{"priors": ["momentum"]}]`` or
                ``[{"priors": ["residual"], "mode": "pcfm"}]`` (a mode of ``physdiff.priors.sampling.METHODS``; beyond
                the paper); a method not defined on the run's process is refused.
        """
        _check_subtask(subtask)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer)):
            raise ValueError(f"n must be an integer, got {n!r}")
        over = [f"sample.sampler={sampler}"] if sampler else []
        over += [f"sample.steps={steps}"] if steps is not None else []
        over += [f"sample.batch_size={batch_size}"] if batch_size is not None else []
        cfg = configure(self.config, over)
        if condition is not None and data is not None:
            raise ValueError("give a condition or a data set to sample from, not both")
        if condition is not None:
            data, idx = self._condition(condition), None
        else:
            if data is None:
                data, idx, where = self.prepared.evaluation, self.prepared.indices, "the evaluation split"
            else:
                if not hasattr(data, "subset") or type(data) is not type(self.data):
                    raise ValueError(
                        f"data must be a data set of this run's task ({type(self.data).__name__}, e.g. "
                        f"run.data or a file loaded by the task), got {type(data).__name__}"
                    )
                _check_arrays(data, "data")
                idx, where = np.arange(_length(data)), "the data"
            if n is not None:
                if not 1 <= n <= len(idx):
                    raise ValueError(f"n must lie in [1, {len(idx)}] (the size of {where}), got {n}")
                data, idx = data.subset(np.arange(n)), idx[:n]
        try:
            tensors = self.task.to_tensors(data, self.prepared.scaling, subtask)
        except (KeyError, TypeError, IndexError) as e:  # a condition the task cannot use: one clear message
            raise ValueError(f"condition: {_message(e)}") from None
        x = sample_tensors(
            self.denoiser,
            tensors,
            cfg.sample,
            self.seed if seed is None else seed,
            device=self.device,
            constraint=self._constraints(constraints),
            dist_info=self.dist_info,
        )
        out = dict(self.task.from_tensors(x, data, self.prepared.scaling))
        for key in ("masses", "edges", "charges", "coefficient"):
            value = getattr(data, key, None)
            if value is not None:
                out["a" if key == "coefficient" else key] = np.asarray(value)
        if idx is not None:
            out["source_indices"] = np.asarray(idx, dtype=np.int64)
        return out

    def evaluate(
        self, samples: Mapping[str, np.ndarray], reference: str | Path | None = None, subtask: str = "prediction"
    ) -> dict[str, dict[str, float | int]]:
        """Metrics of ``samples`` (from :meth:`sample`) against the reference rows they were generated from:
        ``{metric: {"mean", "std", "n", "nonfinite"}}``. ``reference``: a data file (default: the run's). A
        reference whose rows are not the samples' conditions (given frames, masses, coefficient fields; shapes)
        is refused with ``physdiff evaluate``'s message.

        Raises:
            ValueError: a bad sub-task, samples that are not a mapping of arrays, ``source_indices`` that are
                not integers within the reference's rows, a reference whose rows are not the samples'
                conditions, or samples the task cannot evaluate."""
        _check_subtask(subtask)
        if not isinstance(samples, Mapping):
            raise ValueError(
                f"samples must be a mapping of arrays (as run.sample returns), got {type(samples).__name__}"
            )
        if reference is None:
            data, name = self.data, self.prepared.data_path or "the run's data"
        else:
            cfg = configure(self.config, [f"data.path={Path(reference).resolve()}"])
            data, name = (
                prepare(cfg, self.path / "data", split=self.prepared.split, progress=False).data,
                str(reference),
            )
        idx = samples.get("source_indices")
        if idx is None:
            raise ValueError(
                "samples without 'source_indices' (sampled from a user condition) have no reference rows to compare "
                "with; sample without a condition, or add source_indices"
            )
        ref = data.subset(_source_indices(idx, _length(data)))
        try:
            self.task.check_samples_reference(
                samples, ref, subtask, samples_name="the samples dict", reference_name=name
            )
            return summarize_samples(self.task.evaluate(dict(samples), ref, subtask))
        except (KeyError, TypeError, IndexError) as e:  # samples of another layout: one clear message
            raise ValueError(f"samples: {_message(e)}") from None

    def _condition(self, condition: Mapping[str, Any]) -> Any:
        """The task's data set of a user condition, validated like a file: a mapping of finite real arrays of
        the run's shapes, masses > 0, binary symmetric edges where the system has springs, charges it allows."""
        if not isinstance(condition, Mapping):
            raise ValueError(f"condition must be a mapping of arrays, got {type(condition).__name__}")
        try:
            data = self.task.condition_from(condition, self.data)
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"condition: {_message(e)}") from None
        _check_arrays(data, "condition")
        return data


SUBTASKS = ("prediction", "generation")


def _check_subtask(subtask: Any) -> None:
    if subtask not in SUBTASKS:
        raise ValueError(f"subtask must be one of {list(SUBTASKS)}, got {subtask!r}")


def _message(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def _source_indices(idx: Any, n: int) -> np.ndarray:
    """``source_indices`` as int64 rows of a reference with ``n`` rows: integers in ``[0, n)`` (no negative
    index wrapping to the last rows)."""
    a = np.asarray(idx)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ValueError(f"samples: 'source_indices' must be a 1-D integer array, got dtype {a.dtype}, shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(
            f"samples: 'source_indices' must lie in [0, {n - 1}] (the reference's rows), got {a.min()}..{a.max()}: "
            "out of range"
        )
    return a.astype(np.int64)


def _check_arrays(data: Any, where: str) -> None:
    """Particle conditions as a file's arrays are checked (shapes, finite, masses > 0, the spring graph, the
    charges); field conditions finite."""
    from physdiff.data.particles_h5 import ParticleData, validate_particle_arrays
    from physdiff.systems.registry import get_system

    if isinstance(data, ParticleData):
        arrays = {"positions": data.positions, "velocities": data.velocities, "masses": data.masses}
        arrays |= {k: getattr(data, k) for k in ("edges", "charges") if getattr(data, k) is not None}
        try:
            system = get_system(data.system)
        except ValueError:
            system = None
        try:
            validate_particle_arrays(arrays, system, where)
        except KeyError as e:
            raise ValueError(_message(e)) from None
        return
    for key in ("fields", "coefficient"):
        value = getattr(data, key, None)
        if value is not None and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError(f"{where}: {key!r} contains NaN or inf values")


def _length(data: Any) -> int:
    """The number of samples of a particle or field data set."""
    return int((data.fields if hasattr(data, "fields") else data.positions).shape[0])


def load_run(
    path: str | Path,
    *,
    device: str = "cpu",
    split: str = "test",
    cache_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    dist_info: DistInfo | None = None,
) -> Run:
    """A trained run: its config, scaling, EMA weights and task (``path``: the folder with ``config.yaml``,
    ``scaling.json`` and ``checkpoint.pt``); ``overrides``: ``key=value`` changes of the sampling settings;
    ``dist_info``: under torchrun (:func:`physdiff.training.distributed.init_distributed`), the ranks share
    :meth:`Run.sample`'s batches."""
    path = Path(path)
    for name in ("config.yaml", "scaling.json", "checkpoint.pt"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a trained run folder (no {name})")
    raw = load_yaml_dict(path / "config.yaml")
    if not raw:
        raise ValueError(f"{path / 'config.yaml'} is empty; it should hold the run's resolved config")
    arm, seed = str(raw.pop("arm", "no_prior")), int(raw.pop("seed", 0))
    cfg = configure(from_dict(ExperimentConfig, raw, where=str(path / "config.yaml")), overrides)
    # the checkpoint must be this run's: its experiment, system, data and network (not another run's file of
    # the same model size copied in, a hand-edited config or a model override)
    state, used = load_latest_checkpoint(path / "checkpoint.pt")
    if "config" in state:
        keys = ("experiment", "model", "diffusion", "data.system", "data.content_sha256")
        check_config_matches(used, state["config"], to_dict(cfg), keys, optional=("data.content_sha256",))
    info = dist_info or DistInfo()
    dev = resolve_device(device, info.local_rank)
    try:
        scaling = read_json(path / "scaling.json")  # bounded depth: a clear error, not a RecursionError
        make_task(cfg).scaling_from_dict(scaling)
    except ValueError as e:  # JSONDecodeError too
        raise ValueError(f"{path / 'scaling.json'}: {' '.join(str(e).split())}") from None
    prep = prepare(cfg, Path(cache_dir or path / "data"), split=split, progress=False, scaling=scaling, dist_info=info)
    return Run(path, cfg, arm, seed, prep, load_arm(prep, path, dev), dev, info)
