"""``benchmarks/gpu_check.sh --device cpu --dry``: every step of the GPU check, tiny, on a CPU (the script a
session with a GPU runs as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--dry", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    presets = {r["preset"] for r in report["presets"]}
    assert {"three-body-paper", "five-spring-paper", "advection-paper", "darcy-paper"} <= presets
    assert not {"the-well-paper", "generic-paper"} & presets  # they read a user's file
    for row in report["presets"]:
        assert "error" not in row, row
        for p in ("fp32", "bf16"):
            assert row[f"train_steps_per_s_{p}"] > 0 and row[f"sample_per_s_{p}"] > 0
            assert row[f"sample_finite_{p}"]
    assert report["torchrun"]["ok"] and report["torchrun"]["backend"] == "gloo"
    assert report["correctness"]["ok"] and report["dry"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "| three-body-paper | egnn |" in table


@pytest.mark.slow
def test_gpu_check_refuses_a_missing_gpu_and_unknown_presets(tmp_path: Path) -> None:
    import torch

    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([*cmd, "--device", "cpu", "--presets", "nope"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "--presets nope" in res.stderr
    if not torch.cuda.is_available():
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert res.returncode == 2 and "no CUDA GPU" in res.stderr
