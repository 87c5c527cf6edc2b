"""Plots of PDE results: space-time images for 1-D systems; fields, errors and residual maps for 2-D ones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from physdiff.data.pdebench import FieldData
from physdiff.systems.pde_registry import get_pde_system

__all__ = ["plot_field_results"]


def _image(field: np.ndarray, system: str) -> np.ndarray:
    """A 2-D image of one sample: 1-D systems [T, X]; Darcy [X, Y]; shallow water: h at the last frame."""
    if system == "shallow-water":
        return field[-1, 0]
    return field


def _residual_map(system: str, data: FieldData, fields: np.ndarray) -> np.ndarray:
    """|R| of the first sample as an image (shallow water: the middle interior frame)."""
    r = np.abs(get_pde_system(system).residual(data.subset([0]), fields[:1]).detach().cpu().numpy()[0])
    if system == "shallow-water":
        return r[r.shape[0] // 2]
    return r


def plot_field_results(
    out_dir: str | Path, test: FieldData, generated: Mapping[str, Mapping[str, np.ndarray]]
) -> list[Path]:
    """One figure per task: rows = ground truth and each arm; columns = field, |error| (prediction)
    or |residual| (generation / Darcy). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    system = test.system
    tasks = sorted({t for per_task in generated.values() for t in per_task})
    written = []
    for task in tasks:
        rows = [("ground truth", test.fields)] + [(arm, s[task]) for arm, s in generated.items() if task in s]
        show_residual = test.priors_available
        ncol = 2 + int(show_residual)
        fig, axes = plt.subplots(len(rows), ncol, figsize=(3.2 * ncol, 2.6 * len(rows)), squeeze=False)
        ref = _image(test.fields[0], system)
        vmin, vmax = float(ref.min()), float(ref.max())
        for i, (name, fields) in enumerate(rows):
            img = _image(fields[0], system)
            kw = {"aspect": "auto", "origin": "lower"}
            im = axes[i, 0].imshow(img, vmin=vmin, vmax=vmax, cmap="viridis", **kw)
            axes[i, 0].set_title(f"{name}", fontsize=9)
            fig.colorbar(im, ax=axes[i, 0])
            if task == "prediction" and i == 0:  # the reference has no error: say so instead of a blank map
                axes[i, 1].axis("off")
                axes[i, 1].text(0.5, 0.5, "reference\n(|error| = 0)", ha="center", va="center", fontsize=9)
            else:
                if task == "prediction":
                    im = axes[i, 1].imshow(np.abs(img - ref), cmap="magma", **kw)
                    axes[i, 1].set_title("|error|", fontsize=9)
                else:
                    other = _image(fields[1 % len(fields)], system)
                    im = axes[i, 1].imshow(other, cmap="viridis", **kw)
                    axes[i, 1].set_title("another sample", fontsize=9)
                fig.colorbar(im, ax=axes[i, 1])
            if show_residual:
                im = axes[i, 2].imshow(_residual_map(system, test, fields), cmap="magma", **kw)
                axes[i, 2].set_title("|PDE residual|", fontsize=9)
                fig.colorbar(im, ax=axes[i, 2])
        axis = {"advection": "x →, t ↑", "burgers": "x →, t ↑", "darcy": "y →, x ↑"}.get(system, "h at the last frame")
        fig.suptitle(f"{system} — {task} ({axis})", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"fields_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
