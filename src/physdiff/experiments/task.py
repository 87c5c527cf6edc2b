"""The task protocol: what is generated, how it is conditioned, evaluated and plotted.

An experiment is a **task** + a denoiser + priors + a sampler, run by one harness
(:mod:`physdiff.experiments.harness`). A task turns data sets into model tensors and back, builds the
denoiser and the priors of an arm, evaluates generated samples against the reference, writes and reads
sample files and draws the figures; the harness never asks what kind of data it handles.

Sub-tasks: ``prediction`` (the known part of x0 — first frame, coefficient field — is given and kept
fixed) and ``generation`` (no known entries). ``cfg.metrics`` maps each table metric to its sub-task.

Registry: :data:`TASKS` maps a task kind (``cfg.task``) to its class; :func:`make_task` builds one, and
:func:`task_for_file` finds the task that reads a data or samples file.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from physdiff.config import ConfigError
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.experiments.config import ConstraintConfig, ExperimentConfig, PriorConfig
from physdiff.priors.base import Constraint, Prior, PriorNotApplicable, ResidualPrior, law_error

__all__ = [
    "Task",
    "TASKS",
    "register_task",
    "make_task",
    "task_for_file",
    "time_weight_fn",
    "import_prior_class",
    "file_constants",
    "check_constraint_configs",
    "task_for_system",
    "Samples",
]

#: generated samples in physical units, in the data file's layout (e.g. ``positions``/``velocities`` or ``u``)
Samples = dict[str, np.ndarray]
Augment = Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]


def time_weight_fn(name: str, schedule: Any) -> Callable[[Tensor], Tensor] | None:
    """w(t) of a prior by name: ``one`` → None (w ≡ 1), ``alpha2`` → α_t², ``low_noise`` →
    sigmoid(λ(t) − 2) (≈ 1 where σ_t < 0.35, ≈ 0 at high noise, where the Jensen gap of a nonlinear
    prior is largest)."""
    if name == "one":
        return None
    if name == "alpha2":
        return lambda t: schedule.alpha(t) ** 2
    if name == "low_noise":
        return lambda t: torch.sigmoid(schedule.log_snr(t) - 2.0)
    raise ValueError(f"unknown prior time weight {name!r}; choose 'one', 'alpha2' or 'low_noise'")


def import_prior_class(spec: str) -> type[Prior]:
    """A user prior class from ``"package.module:Class"`` or ``"path/to/file.py:Class"``.

    Raises:
        ValueError: the module or file cannot be imported, or the name is not a :class:`Prior` subclass.
    """
    module_name, _, cls_name = spec.rpartition(":")
    if not module_name or not cls_name:
        raise ValueError(f"prior {spec!r}: a user prior is named 'module:Class' or 'file.py:Class'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            name = f"physdiff_user_prior_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # a module beside the caller, as `python -m` finds it
            module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any import failure (sys.exit too) is the user's module
        raise ValueError(f"prior {spec!r}: cannot import {module_name!r} ({type(e).__name__}: {e})") from None
    cls = getattr(module, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Prior)):
        raise ValueError(f"prior {spec!r}: {cls_name!r} in {module_name!r} is not a physdiff Prior subclass")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise ValueError(f"prior {spec!r}: {cls_name!r} is abstract: implement {missing}")
    return cls


#: prior fields that are settings of the library, never read from a file's attributes
_NOT_CONSTANTS = frozenset(
    {"name", "case", "weight", "time_weight", "tol", "dim", "scale", "system", "spacing", "parameters", "coords"}
    | {
        "to_physical",
        "coefficient_to_physical",
        "normaliser",
        "term_scale",
        "residual_name",
        "boundary",
        "periodic",
        "axes",
    }
)


def file_constants(cls: type, values: Mapping[str, Any]) -> dict[str, float]:
    """The constants of a data file (its attributes: ``values``) that a prior class takes as dataclass fields of
    the same name (``k``, ``gamma``, ``dt``, ``kappa`` ...), as floats; a user prior gets them as built-ins do."""
    if not dataclasses.is_dataclass(cls):
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if f.name in _NOT_CONSTANTS or not f.init or value is None or isinstance(value, (bool, str, bytes)):
            continue
        if np.ndim(value) == 0 and np.isreal(value):
            out[f.name] = float(value)
    return out


class Task(ABC):
    """Base class of a task; one instance per experiment config.

    Subclasses set ``kind`` and implement the abstract methods; the harness calls nothing else.
    """

    kind: ClassVar[str] = ""
    #: built-in prior names of the task (a user prior is named by import path)
    builtin_priors: ClassVar[tuple[str, ...]] = ()
    #: a line under the table saying what its metrics and floor are
    table_note: ClassVar[str] = ""
    #: the metric keys :meth:`evaluate` can return (``cfg.metrics`` must name some of them)
    metric_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: ExperimentConfig) -> None:
        unknown = [k for k in cfg.metrics if self.metric_names and k not in self.metric_names]
        if unknown:
            raise ConfigError(
                f"config key 'metrics': {unknown} are not metrics of a {self.kind or type(self).__name__} task; "
                f"choose from {list(self.metric_names)}"
            )
        self.cfg = cfg
        self.schedule = make_schedule(cfg.diffusion.schedule, process=cfg.diffusion.process)

    # ------------------------------------------------------------------------------------- data
    @abstractmethod
    def load(self, cache_dir: Path, progress: bool = True) -> Any:
        """The whole data set (simulated into ``cache_dir`` if needed) with its ``splits``."""

    @abstractmethod
    def describe(self, data: Any) -> dict[str, Any]:
        """What a data set holds (``n`` and ``settings``: sizes, grid, constants), recorded in a run's config."""

    @abstractmethod
    def fit_scaling(self, train: Any) -> Any:
        """The normalisation of the model's tensors, fitted on the training split (``to_dict``-able)."""

    @abstractmethod
    def scaling_from_dict(self, d: Mapping[str, Any]) -> Any:
        """A stored scaling (``scaling.json`` of a run)."""

    @abstractmethod
    def to_tensors(
        self, data: Any, scaling: Any, subtask: str, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        """``x0`` (model layout), the known-entry ``mask`` of the sub-task and the context tensors."""

    @abstractmethod
    def from_tensors(self, x: Tensor, data: Any, scaling: Any) -> Samples:
        """Model samples → physical samples in the file layout (the conditioning of ``data`` restored)."""

    # ------------------------------------------------------------------------------ components
    @abstractmethod
    def build_denoiser(self, scaling: Any, example: Mapping[str, Tensor]) -> Denoiser:
        """Network + schedule + parametrisation for tensors like ``example``."""

    @abstractmethod
    def make_prior(self, spec: PriorConfig, train: Any, scaling: Any, tensors: Mapping[str, Tensor]) -> Prior:
        """One prior of an arm on model tensors (λ, w(t), variant, options from ``spec``), unchecked."""

    @abstractmethod
    def make_constraint_prior(self, name: str, train: Any, scaling: Any) -> Prior:
        """A prior enforcing its law R = 0 at sampling time (physical units, no normalisation)."""

    def augment(self) -> Augment | None:
        """A training augmentation of the batch, or ``None``."""
        return None

    def draws_per_condition(self, subtask: str) -> int:
        """Samples drawn of each condition of ``subtask``: > 1 for metrics over several draws (GeoTDM's min- and
        average ADE / FDE), whose further draws :meth:`evaluate` then takes as ``draws=[...]``."""
        return 1

    def supports_priors(self, data: Any) -> bool:
        """Whether the stored variables can evaluate the task's priors (e.g. not a field file holding h only)."""
        return True

    def samples_as_data(self, samples: Samples, reference: Any) -> Any:
        """Generated samples as a data set of the task (the conditions and constants of ``reference``), to
        measure laws on them (:func:`physdiff.experiments.harness.law_metrics`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot measure laws on its samples")

    def law_scaling(self, scaling: Any) -> Any:
        """The scaling under which laws are measured on samples (``law:<name>``): the state as it is physically
        (a particle task's absolute positions, not centred on the centre of mass)."""
        return scaling

    @staticmethod
    def context(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The context tensors (everything but ``x0``, ``mask``, ``known``)."""
        return {k: v for k, v in tensors.items() if k not in ("x0", "mask", "known")}

    # ------------------------------------------------------------------------------ evaluation
    @abstractmethod
    def evaluate(self, samples: Samples, reference: Any, subtask: str) -> dict[str, np.ndarray]:
        """Per-sample values ``[N]`` of the metrics measured on ``subtask`` (``cfg.metrics``)."""

    @abstractmethod
    def floor(self, reference: Any) -> dict[str, float]:
        """The metrics of the ground truth against itself (conservation laws, residuals)."""

    @abstractmethod
    def write_samples(
        self, path: Path, samples: Samples, reference: Any, indices: np.ndarray, split: str, subtask: str
    ) -> Path:
        """Write samples in the data's layout, with ``source_indices`` and the reference's provenance."""

    @abstractmethod
    def read_samples(self, path: Path, max_samples: int | None = None) -> Samples:
        """Samples written by :meth:`write_samples` (the first ``max_samples``), with their ``source_indices``."""

    @abstractmethod
    def condition_from(self, condition: Mapping[str, Any], template: Any) -> Any:
        """A data set holding a user's conditions (first frames / coefficient fields, physical units) to sample
        from (the public run API); ``template`` (the run's data) gives the grid, frames and constants."""

    def check_samples_reference(
        self, samples: Samples, reference: Any, subtask: str, *, samples_name: str, reference_name: str
    ) -> None:
        """Refuse reference rows (row-aligned with ``samples``) whose conditions are not the samples' (given
        frames, masses, coefficient fields; shapes), with ``physdiff evaluate``'s check and message."""
        raise NotImplementedError(f"{type(self).__name__} does not check a samples' reference rows")

    @abstractmethod
    def plot(
        self,
        out_dir: Path,
        reference: Any,
        generated: Mapping[str, Mapping[str, Samples]],
        *,
        per_seed: Mapping[str, Mapping[int, Mapping[str, Samples]]] | None = None,
        constraints: Mapping[str, Mapping[int, Mapping[str, Samples]]] | None = None,
        training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]] | None = None,
    ) -> list[Path]:
        """Figures of ``generated[arm][subtask]`` (and, when given, every seed's samples, the sampling-constraint
        rows' samples and the training logs) against the reference; returns the written files."""

    # ------------------------------------------------------------------------------ file-level (CLI)
    @classmethod
    @abstractmethod
    def recognises(cls, path: Path) -> bool:
        """Whether ``path`` is a data or samples file of this task's format."""

    @classmethod
    @abstractmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        """``physdiff evaluate``: ``{"metrics": {key: {"mean", "std", ...}}, "floor": {...}}``."""

    @classmethod
    @abstractmethod
    def systems(cls) -> tuple[str, ...]:
        """The systems this task simulates."""

    @classmethod
    @abstractmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        """``physdiff simulate``: simulate and write a data file; returns a summary."""

    # ----------------------------------------------------------------------------------- shared
    def prior_class(self, spec: PriorConfig) -> type[Prior] | None:
        """A user prior class (name ``module:Class``), or ``None`` for a built-in name."""
        return import_prior_class(spec.name) if ":" in spec.name else None

    def time_weight(self, spec: PriorConfig) -> Callable[[Tensor], Tensor] | None:
        return time_weight_fn(spec.time_weight, self.schedule)

    def build_priors(self, specs: Sequence[PriorConfig], train: Any, scaling: Any, check: bool = True) -> list[Prior]:
        """The priors of one arm on model tensors, each checked on the ground truth (a sign, unit or scale
        bug, or data that do not obey the law, is refused before training: :class:`PriorNotApplicable`);
        ``check=False`` leaves the check to the caller."""
        tensors = self.to_tensors(train, scaling, self.cfg.subtasks[0], dtype=torch.float64)
        priors = []
        for i, spec in enumerate(specs):
            try:
                priors.append(self.make_prior(spec, train, scaling, tensors))
            except TypeError as e:  # an option the prior class does not take (priors.<i>.options.<key>)
                if "keyword argument" not in str(e):
                    raise
                raise ValueError(
                    f"priors.{i}.options {dict(spec.options)}: the {spec.name!r} prior does not take it ({e})"
                ) from None
        head = {k: v[:32] for k, v in tensors.items()}
        for spec, prior in zip(specs if check else (), priors, strict=False):
            self.check_law(prior, head["x0"], self.context(head), tol=spec.tol, key=self.prior_key(spec.name))
        return priors

    def prior_key(self, name: str) -> str:
        """``priors.<i>`` of the configured prior called ``name`` (where its ``tol`` is set)."""
        names = [p.name for p in self.cfg.priors]
        return f"priors.{names.index(name)}" if name in names else f"priors.<{name}>"

    def prior_tol(self, name: str) -> float | None:
        """``priors.<i>.tol`` of the configured prior called ``name`` (``None``: the prior's default)."""
        return next((p.tol for p in self.cfg.priors if p.name == name), None)

    @staticmethod
    def check_law(prior: Prior, x0: Tensor, context: Mapping[str, Tensor], *, tol: float | None, key: str) -> None:
        """The prior's ground-truth check and, for a feature prior that states a law (energy), the law itself,
        relative to its own scale (:func:`physdiff.priors.base.law_error`); a failure is refused with the config
        key of its tolerance."""
        base = getattr(prior, "base", prior)  # an auxiliary-head prior checks its base prior's law
        try:
            prior.check_ground_truth(x0, tol=tol, **context)
            if isinstance(base, Constraint) and not isinstance(base, ResidualPrior):
                limit = base.tolerance(tol)
                rms, scale, rel = law_error(base, x0, **context)
                if not rel <= limit:
                    raise PriorNotApplicable(
                        f"prior {base.name!r}: the data do not obey its law (RMS R = {rms:.3e} is {rel:.3e} of its "
                        f"scale {scale:.3e} > tol = {limit:.1e}, priors.N.tol)"
                    )
        except PriorNotApplicable as e:
            raise PriorNotApplicable(str(e).replace("priors.N.tol", f"{key}.tol")) from None

    def check_tolerance(self, prior: Prior) -> dict[str, float]:
        """Keyword ``tol`` of :meth:`Prior.check_ground_truth` for this task (default: the prior's own)."""
        return {}

    def law_priors(self, train: Any, scaling: Any, names: Sequence[str] | None = None) -> list[Prior]:
        """The laws a table reports as ``law:<name>``: of the priors ``names`` (default: every configured prior and
        every prior a sampling-time constraint enforces), those that state a law R = 0, as constraint priors."""
        if names is None:
            names = [p.name for p in self.cfg.priors] + [n for c in self.cfg.sample.constraints for n in c.priors]
        out = []
        for name in dict.fromkeys(names):
            try:
                prior = self.make_constraint_prior(name, train, scaling)
            except ValueError:
                continue  # a prior without a law the task can state (reported by its arm, not here)
            if isinstance(prior, Constraint):
                out.append(prior)
        return out

    def build_constraints(self, train: Any, scaling: Any) -> list[tuple[ConstraintConfig, list[Prior]]]:
        """The sampling-time constraints of ``cfg.sample.constraints`` with their priors (model tensors in,
        physical residuals); each law must hold on the ground truth relative to its scale (``priors.N.tol`` of
        a configured prior of that name, else the prior's default), or the projection would pull samples off
        the data's physics."""
        from physdiff.priors.sampling import make_method

        check_constraint_configs(self.cfg.sample.constraints)
        tensors = self.to_tensors(train, scaling, self.cfg.subtasks[0], dtype=torch.float64)
        x0, ctx = tensors["x0"][:16], {k: v[:16] for k, v in self.context(tensors).items()}
        out = []
        for c in self.cfg.sample.constraints:
            priors = [self.make_constraint_prior(name, train, scaling) for name in c.priors]
            # bad settings (method, first_step) and a process the method is not defined on fail here
            make_method(priors, **c.hook_options()).check_process(self.cfg.diffusion.process)
            for p in priors:
                try:
                    self.check_law(p, x0, ctx, tol=self.prior_tol(p.name), key=self.prior_key(p.name))
                except PriorNotApplicable as e:
                    raise PriorNotApplicable(f"sample.constraints {c.label!r}: {e}") from None
            out.append((c, priors))
        return out


def check_constraint_configs(constraints: Sequence[ConstraintConfig]) -> None:
    """Refuse ``sample.constraints`` entries with an unknown mode, no prior, or a label listed twice."""
    from physdiff.priors.sampling import CONSTRAINT_MODES

    labels = set()
    for c in constraints:
        if c.mode not in CONSTRAINT_MODES:
            raise ValueError(
                f"sample.constraints: unknown mode {c.mode!r} ({c.label}); choose one of {CONSTRAINT_MODES}"
            )
        if not c.priors:
            raise ValueError("sample.constraints: a constraint names no prior (priors=[...])")
        if c.label in labels:
            raise ValueError(f"sample.constraints: {c.label!r} is listed twice")
        labels.add(c.label)


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task to :data:`TASKS` under its ``kind``."""
    TASKS[cls.kind] = cls
    return cls


BUILTIN_TASK_MODULES = (
    "physdiff.experiments.particle_task",
    "physdiff.experiments.field_task",
    "physdiff.experiments.well_task",
    "physdiff.experiments.generic_field_task",
)


def _load_builtin_tasks() -> None:
    for module in BUILTIN_TASK_MODULES:  # each registers its task on import (idempotent)
        importlib.import_module(module)


def make_task(cfg: ExperimentConfig) -> Task:
    """The task of ``cfg.task``."""
    _load_builtin_tasks()
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; choose one of {sorted(TASKS)}")
    return TASKS[cfg.task](cfg)


def task_for_file(path: str | Path) -> type[Task]:
    """The task class whose format ``path`` is (data or samples file)."""
    _load_builtin_tasks()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    for cls in TASKS.values():
        try:
            if cls.recognises(path):
                return cls
        except OSError as e:
            raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    raise ValueError(f"{path}: not a particle (positions/velocities) or field (PDEBench layout) HDF5 file")


def task_for_system(system: str) -> type[Task]:
    """The task class that simulates ``system``."""
    _load_builtin_tasks()
    for cls in TASKS.values():
        if system in cls.systems():
            return cls
    valid = sorted(s for cls in TASKS.values() for s in cls.systems())
    raise ValueError(f"unknown system {system!r}; valid: {', '.join(valid)}")
