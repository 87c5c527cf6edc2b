"""A user prior is one small class in the user's own file, usable from the CLI and from configs by import
path, checked on the ground truth and logged like the built-ins."""

from __future__ import annotations

import csv
import textwrap

from physdiff.cli.main import main
from test_reproduce_particles import TINY

USER_PRIORS = textwrap.dedent(
    '''
    from dataclasses import dataclass

    from physdiff.priors import ParticlePrior, ResidualPrior


    @dataclass
    class DriftFreeMomentum(ParticlePrior, ResidualPrior):
        """Total momentum stays at its first-frame value (linear)."""

        name: str = "drift-free"
        case: str = "linear"

        def residual(self, x, **context):
            _, V = self.split(x)
            P = (self.masses(x, context)[..., None] * V).sum(-2)
            return P[:, 1:] - P[:, :1]


    @dataclass
    class SignBug(DriftFreeMomentum):
        def residual(self, x, **context):
            _, V = self.split(x)
            P = (self.masses(x, context)[..., None] * V).sum(-2)
            return P[:, 1:] + P[:, :1]
    '''
)


def test_user_prior_file_from_the_cli_and_from_a_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_priors.py").write_text(USER_PRIORS)
    monkeypatch.chdir(tmp_path)
    spec = f"{tmp_path / 'my_priors.py'}:DriftFreeMomentum"
    run = tmp_path / "run"
    argv = ["train", "five-spring", "--arm", f"prior:{spec}", "--run-dir", str(run), "--device", "cpu", *TINY]
    assert main(argv) == 0
    with open(run / "metrics.csv") as f:
        header = next(csv.reader(f))
    # its penalty is logged like a built-in's, under its class as tables and figures label it (no path)
    assert "DriftFreeMomentum" in header and not any(str(tmp_path) in h for h in header)
    # by module name (importable from the working directory) in a config's prior list
    out = tmp_path / "res"
    over = ["priors=[{name: 'my_priors:DriftFreeMomentum', weight: 1.0}]", "sample.constraints=[]"]
    argv = ["reproduce", "five-spring", "--out", str(out), "--seeds", "0", "--device", "cpu", *TINY, *over]
    assert main(argv) == 0
    table = (out / "table.md").read_text()
    assert "| prior:DriftFreeMomentum |" in table and "my_priors" not in table  # labelled by class, not import path
    # checked on the ground truth: a sign bug is refused before any training, naming the prior
    capsys.readouterr()
    argv = ["train", "five-spring", "--arm", "prior:my_priors:SignBug", "--run-dir", str(tmp_path / "bad"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "my_priors:SignBug" in err and "not ≈ 0" in err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
    # an import path that does not resolve is one clear line
    assert main(["train", "five-spring", "--arm", "prior:nowhere:Nothing", "--run-dir", str(tmp_path / "x")]) == 2
    assert "cannot import 'nowhere'" in capsys.readouterr().err
