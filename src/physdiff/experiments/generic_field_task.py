"""Fields of unknown physics as a field task: ``physdiff reproduce generic --data FILE`` on a field file.

The file (PDEBench's 1-D or 2-D layout, any channels, periodic or not, no coefficient:
:mod:`physdiff.data.pdebench.generic`) describes its own system, registered for this process
(:func:`physdiff.systems.pde_registry.register_pde_system`), so the field task's layout, U-Net (circular padding
on periodic axes), prediction (given the first frame), generation and metrics work unchanged. No built-in residual
is known for it: the arms are ``no_prior`` and the user priors given by import path
(:class:`physdiff.priors.fields.FieldPrior`), whose laws the table reports as ``law:<name>``. Samples are written
back in the file's layout.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.data.pdebench import FieldData
from physdiff.data.pdebench.generic import (
    GENERIC_PREFIX,
    is_generic_field_file,
    load_generic_fields,
    write_generic_fields,
)
from physdiff.data.provenance import fingerprint
from physdiff.experiments.field_task import FieldTask, evaluate_own_layout
from physdiff.experiments.task import Samples, register_task
from physdiff.systems.pde_registry import PDESystem, get_pde_system, register_pde_system

__all__ = ["GenericFieldTask"]

log = logging.getLogger("physdiff")


@register_task
class GenericFieldTask(FieldTask):
    kind = "generic-fields"
    builtin_priors = ()
    metric_names = tuple(k for k in FieldTask.metric_names if k != "constraint_rmse")
    table_note = (
        "rmse: prediction RMSE vs ground truth on unknown entries (physical units); law:<name>: RMS of a user "
        "prior's residual on the samples (floor: on the ground truth)."
    )

    @property
    def system(self) -> PDESystem:
        name = self.cfg.data.system
        try:
            return get_pde_system(name if name.startswith(GENERIC_PREFIX) else f"{GENERIC_PREFIX}{name}")
        except ValueError:
            raise ValueError(
                f"generic fields: read the data file first ({self.cfg.data.path or 'no --data FILE'})"
            ) from None

    def load(self, cache_dir: Path, progress: bool = True) -> FieldData:
        d = self.cfg.data
        if not d.path:
            raise ValueError("generic reads a data file: pass --data FILE (data.path=FILE)")
        data, system = load_generic_fields(d.path, d.downsample_x, d.downsample_t, d.max_samples, max_bytes=d.max_bytes)
        register_pde_system(system)
        self.cfg.data.system = system.name
        if progress and data.split_source != "file":
            log.info("note (%s): no 'splits' group; PDEBench's convention (first 10 %% test)", Path(d.path).name)
        return data

    def supports_priors(self, data: FieldData) -> bool:
        return True

    def plot(self, out_dir: Path, reference: FieldData, generated: Any, **kw: Any) -> list[Path]:
        """The field task's figures, without the residual panels (no built-in residual is known)."""
        return super().plot(out_dir, dataclasses.replace(reference, priors_available=False), generated, **kw)

    def write_samples(
        self, path: Path, samples: Samples, reference: FieldData, indices: np.ndarray, split: str, subtask: str
    ) -> Path:
        attrs = {
            **reference.parameters,
            "system": self.system.name,
            "generated": True,
            "task": subtask,
            "periodic": ",".join(self.system.periodic),
            "reference_path": str(Path(reference.source).resolve()) if reference.source else "",
            "reference_split": split,
            "reference_sha256": fingerprint(reference.fields),
        }
        return write_generic_fields(path, samples["u"], reference.coords, attrs, source_indices=indices)

    def read_samples(self, path: Path, max_samples: int | None = None) -> Samples:
        data, _ = load_generic_fields(path, max_samples=max_samples)
        with h5py.File(path, "r") as f:
            idx = np.asarray(f["source_indices"][()], dtype=np.int64)
        return {"u": data.fields, "source_indices": idx[: len(data.fields)]}

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return is_generic_field_file(path)

    @classmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        """``physdiff evaluate`` of generic field samples against the file they were sampled from (its rows by
        ``source_indices``; the given first frame checked for a prediction)."""
        return evaluate_own_layout(cls, "generic-fields", samples, reference, options, metrics=lambda t: {"rmse": t})

    @classmethod
    def systems(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        raise ValueError("generic fields are read from a file (--data FILE), not simulated")
