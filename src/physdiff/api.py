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

import json
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
            constraints: sampling-time constraints, e.g. ``[{"priors": ["momentum"]}]`` (beyond the paper).
        """
        over = [f"sample.sampler={sampler}"] if sampler else []
        over += [f"sample.steps={steps}"] if steps is not None else []
        over += [f"sample.batch_size={batch_size}"] if batch_size is not None else []
        cfg = configure(self.config, over)
        if condition is not None and data is not None:
            raise ValueError("give a condition or a data set to sample from, not both")
        if condition is not None:
            data, idx = self.task.condition_from(condition, self.data), None
        else:
            if data is None:
                data, idx, where = self.prepared.evaluation, self.prepared.indices, "the evaluation split"
            else:
                idx, where = np.arange(_length(data)), "the data"
            if n is not None:
                if not 1 <= n <= len(idx):
                    raise ValueError(f"n must lie in [1, {len(idx)}] (the size of {where}), got {n}")
                data, idx = data.subset(np.arange(n)), idx[:n]
        tensors = self.task.to_tensors(data, self.prepared.scaling, subtask)
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
        ``{metric: {"mean", "std", "n", "nonfinite"}}``. ``reference``: a data file (default: the run's)."""
        if reference is None:
            data = self.data
        else:
            cfg = configure(self.config, [f"data.path={Path(reference).resolve()}"])
            data = prepare(cfg, self.path / "data", split=self.prepared.split, progress=False).data
        idx = samples.get("source_indices")
        if idx is None:
            raise ValueError(
                "samples without 'source_indices' (sampled from a user condition) have no reference rows to compare "
                "with; sample without a condition, or add source_indices"
            )
        ref = data.subset(np.asarray(idx, dtype=np.int64))
        return summarize_samples(self.task.evaluate(dict(samples), ref, subtask))


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
        scaling = json.loads((path / "scaling.json").read_text())
        make_task(cfg).scaling_from_dict(scaling)
    except ValueError as e:  # JSONDecodeError too
        raise ValueError(f"{path / 'scaling.json'}: {' '.join(str(e).split())}") from None
    prep = prepare(cfg, Path(cache_dir or path / "data"), split=split, progress=False, scaling=scaling, dist_info=info)
    return Run(path, cfg, arm, seed, prep, load_arm(prep, path, dev), dev, info)
