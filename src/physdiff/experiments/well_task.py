"""The Well's data sets as a field task: `physdiff reproduce the-well --data FILE`.

A The Well HDF5 file (PolymathicAI's format, :mod:`physdiff.data.the_well`) describes its own system: 2-D
fields ``[N, T, C, X, Y]`` with named channels, the time and space grids, and boundary conditions (periodic
axes). :class:`WellTask` reads it into the field task's data set and registers a system with those facts
(:func:`physdiff.systems.pde_registry.register_pde_system`), so the field task's layout, U-Net (circular
padding on periodic axes), prediction (given the first frame), generation and PDEBench metrics work
unchanged. No PDE residual is known for such a file, so only the ``no_prior`` arm runs, unless a user prior
is given by import path. Samples are written back in The Well's layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np

from physdiff.data.pdebench import FieldData, default_splits
from physdiff.data.provenance import fingerprint
from physdiff.data.the_well import load_the_well, write_the_well
from physdiff.experiments.field_task import FieldTask, evaluate_own_layout
from physdiff.experiments.task import Samples, register_task
from physdiff.systems.pde_registry import PDESystem, get_pde_system, register_pde_system

__all__ = ["WellTask", "well_system"]

log = logging.getLogger("physdiff")
PREFIX = "the-well:"


def _not_simulated(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError("The Well's data sets are read from their files (--data FILE), not simulated")


def well_system(name: str, channels: tuple[str, ...], periodic: tuple[bool, bool]) -> PDESystem:
    """The system a The Well file describes: 2-D time-dependent fields with its channels and periodic axes."""
    return PDESystem(
        name=f"{PREFIX}{name}",
        equation=f"The Well data set {name!r} (no residual known to physdiff)",
        field_axes=("t", "c", "x", "y"),
        channels=tuple(channels),
        periodic=tuple(a for a, p in zip(("x", "y"), periodic, strict=True) if p),
        coefficient=None,
        tasks=("prediction", "generation"),
        parameters=MappingProxyType({}),
        simulate_fn=_not_simulated,
        defaults=MappingProxyType({}),
        large=MappingProxyType({}),
        residuals=MappingProxyType({}),
    )


def _is_well(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return "t0_fields" in f and "dimensions" in f


@register_task
class WellTask(FieldTask):
    kind = "the-well"
    builtin_priors = ()
    table_note = "rmse: prediction RMSE vs ground truth on unknown entries (physical units); PDEBench's metrics too."

    @property
    def system(self) -> PDESystem:
        name = self.cfg.data.system
        return get_pde_system(name if name.startswith(PREFIX) else f"{PREFIX}{name}")

    def load(self, cache_dir: Path, progress: bool = True) -> FieldData:
        d = self.cfg.data
        if not d.path:
            raise ValueError("the-well reads a The Well HDF5 file: pass --data FILE (data.path=FILE)")
        well = load_the_well(
            d.path,
            max_samples=d.max_samples,
            downsample_x=d.downsample_x,
            downsample_t=d.downsample_t,
            max_bytes=d.max_bytes,
        )
        if progress:
            for msg in well.messages:
                log.info("note (%s): %s", Path(d.path).name, msg)
        system = register_pde_system(well_system(well.name or Path(d.path).stem, well.channels, well.periodic))
        self.cfg.data.system = system.name
        n = well.fields.shape[0]
        splits = default_splits(n)  # The Well ships train/valid/test as separate files: each is a --data FILE
        if progress:
            log.info(
                "note (%s): %d trajectories split by PDEBench's convention (first 10 %% test)", Path(d.path).name, n
            )
        params = {k: v for k, v in well.parameters.items() if np.ndim(v) == 0}
        return FieldData(
            system=system.name,
            fields=well.fields,
            coords={k: well.coords[k] for k in ("t", "x", "y")},
            parameters=params,
            splits=splits,
            split_source="pdebench-convention",
            channels=well.channels,
            priors_available=False,
            messages=list(well.messages),
            source=str(Path(d.path).resolve()),
            origin="the-well",
        )

    def supports_priors(self, data: FieldData) -> bool:
        return False

    # ------------------------------------------------------------------------------ sample files
    def write_samples(
        self, path: Path, samples: Samples, reference: FieldData, indices: np.ndarray, split: str, subtask: str
    ) -> Path:
        """Samples in The Well's layout (one scalar field per channel), with ``source_indices`` and the
        reference's provenance as root attributes."""
        u = samples["u"]
        fields = {name: u[:, :, c] for c, name in enumerate(reference.channels)}
        periodic = tuple(a in self.system.periodic for a in ("x", "y"))
        c = reference.coords

        def amend(f: h5py.File) -> None:
            f.attrs["generated"] = True
            f.attrs["task"] = subtask
            f.attrs["reference_path"] = reference.source or ""
            f.attrs["reference_split"] = split
            f.attrs["reference_sha256"] = fingerprint(reference.fields)
            f.create_dataset("source_indices", data=np.asarray(indices, dtype=np.int64))

        write_the_well(
            path,
            fields,
            t=c["t"],
            x=c["x"],
            y=c["y"],
            periodic=periodic,
            dtype=np.float64,
            dataset_name=self.system.name.removeprefix(PREFIX),
            amend=amend,
        )
        return path

    def read_samples(self, path: Path, max_samples: int | None = None) -> Samples:
        well = load_the_well(path, max_samples=max_samples)
        with h5py.File(path, "r") as f:
            idx = np.asarray(f["source_indices"][()], dtype=np.int64)
        return {"u": well.fields, "source_indices": idx[: len(well.fields)]}

    # ------------------------------------------------------------------------------ file-level
    @classmethod
    def recognises(cls, path: Path) -> bool:
        return _is_well(path)

    @classmethod
    def evaluate_files(cls, samples: Path, reference: Path, system: str | None = None, **options: Any) -> dict:
        return evaluate_own_layout(cls, "the-well", samples, reference, options)

    @classmethod
    def systems(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def simulate_to_file(cls, system: str, path: Path, n: int, seed: int, **settings: Any) -> dict[str, Any]:
        return _not_simulated()
