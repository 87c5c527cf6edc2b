"""Sampler throughput and accuracy of the diffusion core (prints figures; not a test).

* throughput: samples/s and denoiser evaluations per sample of every sampler (DDPM, DDIM, Euler, Heun,
  DPM-Solver++(2M)) on a toy MLP denoiser, for the VP (linear) and the flow process;
* accuracy: on the analytic Gaussian denoiser (the exact optimum, so only the discretisation error
  remains), against steps, for the deterministic samplers on the VP linear and cosine schedules and the flow
  process: max |Σ̂ − Σ| and max |μ̂ − μ| of n samples (Monte-Carlo error ≈ 4·sqrt(2/n) on Σ_00), and
  max |Σ_N − Σ| of the sampler's exact output law (no Monte-Carlo error: on Gaussian data a deterministic
  sampler is an affine map of its start draw, so three runs give its mean and covariance exactly).
"""

from __future__ import annotations

import argparse
import time

import torch

from physdiff.diffusion import SAMPLERS, Denoiser, make_process, make_sampler, sample
from physdiff.diffusion.gaussian import GaussianDenoiserNet
from physdiff.models.mlp import MLPDenoiser


class Counting(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *a, **k):
        self.calls += 1
        return self.net(*a, **k)


def exact_law(sampler, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of a deterministic sampler's output on Gaussian data (affine in the start draw)."""
    z = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)])
    sampler.noise = lambda like: z.clone()
    out = sampler((dim + 1, dim), dtype=torch.float64)
    a = (out[1:] - out[0]).T
    return out[0], a @ a.T


PROCESS_CASES = {"vp-linear": ("vp", "linear"), "vp-cosine": ("vp", "cosine"), "flow": ("flow", "linear")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    print("\n## throughput (toy MLP denoiser, d = 2, hidden 128, batch", a.n, ")")
    print("| process | sampler | steps | samples/s | denoiser evals / sample |\n|---|---|---|---|---|")
    cases = [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("euler", 50), ("heun", 25), ("heun", 10), ("dpmpp2m", 25)]
    cases += [("dpmpp2m", 10)]
    for process, prediction in (("vp", "eps"), ("flow", "v")):
        sched = make_process(process)
        for sampler, steps in cases:
            net = Counting(MLPDenoiser(2).to(dev))
            den = Denoiser(net, sched, prediction)
            t0 = time.perf_counter()
            sample(den, (a.n, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0), device=dev)
            dt = time.perf_counter() - t0
            evals = SAMPLERS[sampler].evaluations(steps)
            assert net.calls == evals, (sampler, steps, net.calls, evals)
            print(f"| {process} | {sampler} | {steps} | {a.n / dt:,.0f} | {evals} |")

    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    band = 4 * (2 / a.n) ** 0.5
    print(f"\n## accuracy on N(μ, Σ), analytic denoiser (n = {a.n}; 4 standard errors of Σ̂_00 ≈ {band:.3f})")
    print("max abs(Σ_N − Σ): the sampler's exact output law (no Monte-Carlo error).")
    print(
        "| process | sampler | spacing | steps | evals | max abs(Σ_N − Σ) | max abs(Σ̂ − Σ) | max abs(μ̂ − μ) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    ode = [
        ("ddim", None),
        ("euler", None),
        ("heun", None),
        ("heun", "uniform"),
        ("heun", "edm"),
        ("dpmpp2m", None),
        ("dpmpp2m", "edm"),
    ]
    for label, (process, schedule) in PROCESS_CASES.items():
        sched = make_process(process, schedule=schedule)
        den = Denoiser(GaussianDenoiserNet(mu, cov, sched), sched, "x0")
        seen = set()
        for sampler, spacing in ode:
            spacing = spacing or SAMPLERS[sampler].default_spacing_for(sched.kind)
            if (sampler, spacing) in seen:
                continue
            seen.add((sampler, spacing))
            for steps in (10, 25, 50):
                _, exact_cov = exact_law(make_sampler(sampler, den, steps=steps, spacing=spacing), 2)
                x = sample(
                    den,
                    (a.n, 2),
                    sampler=sampler,
                    steps=steps,
                    spacing=spacing,
                    eta=0.0,
                    generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64,
                )
                c = torch.cov(x.T)
                print(
                    f"| {label} | {sampler} | {spacing} | {steps} | {SAMPLERS[sampler].evaluations(steps)} | "
                    f"{float((exact_cov - cov).abs().max()):.4f} | {float((c - cov).abs().max()):.4f} | "
                    f"{float((x.mean(0) - mu).abs().max()):.4f} |"
                )


if __name__ == "__main__":
    main()
