"""Plots of generated particle trajectories and of conserved quantities over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from physdiff.data.particles_h5 import ParticleData  # noqa: E402


def plot_particle_results(
    folder: str | Path,
    ref: ParticleData,
    generated: dict[str, tuple[np.ndarray, np.ndarray]],
    sample: int = 0,
) -> list[Path]:
    """trajectories.png (x–y paths of one test sample, ground truth vs each arm) and conservation.png
    (mean |E_l − E_0| and ‖P_l − P_0‖ over frames, per arm and for the ground truth)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    system = ref.get_system()
    panels = [("ground truth", ref.positions)] + [(arm, rv[0]) for arm, rv in generated.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, pos) in zip(axes[0], panels, strict=True):
        for k in range(pos.shape[2]):
            ax.plot(pos[sample, :, k, 0], pos[sample, :, k, 1], "-o", ms=2, lw=1)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    paths = [folder / "trajectories.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    m = ref.masses[:, None]
    e = ref.edges[:, None] if ref.edges is not None else None
    e_true = np.asarray(system.total_energy(ref.positions[:, :1], ref.velocities[:, :1], m, e))
    p_true = np.asarray(system.momentum(ref.velocities[:, :1], m))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    series = [("ground truth", ref.positions, ref.velocities)] + [(a, r, v) for a, (r, v) in generated.items()]
    for name, r, v in series:
        en = np.asarray(system.total_energy(r, v, m, e))
        mo = np.asarray(system.momentum(v, m))
        a1.plot(np.abs(en - e_true).mean(0), label=name)
        a2.plot(np.linalg.norm(mo - p_true, axis=-1).mean(0), label=name)
    a1.set(xlabel="frame", ylabel="mean |E_l − E_0|", title="energy drift", yscale="symlog")
    a2.set(xlabel="frame", ylabel="mean ‖P_l − P_0‖", title="momentum drift", yscale="symlog")
    a1.legend()
    fig.tight_layout()
    paths.append(folder / "conservation.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths
