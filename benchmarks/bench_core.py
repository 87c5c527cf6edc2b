"""Sampler throughput and accuracy of the diffusion core (prints figures; not a test).

* throughput: samples/s and denoiser evaluations per sample of DDPM/DDIM/Heun on a toy MLP denoiser;
* accuracy: max |Σ̂ − Σ| of DDIM and Heun at 10/20/50 steps against DDPM-1000 on the analytic
  Gaussian denoiser (the exact optimum, so only the discretisation error remains).
"""

from __future__ import annotations

import argparse
import time

import torch

from physdiff.diffusion import SAMPLERS, Denoiser, make_schedule, sample
from physdiff.diffusion.gaussian import GaussianDenoiserNet
from physdiff.models.mlp import MLPDenoiser


class Counting(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *a, **k):
        self.calls += 1
        return self.net(*a, **k)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    sched = make_schedule("linear")
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    print("\n## throughput (toy MLP denoiser, d = 2, hidden 128, batch", a.n, ")")
    print("| sampler | steps | samples/s | denoiser evals / sample |\n|---|---|---|---|")
    for sampler, steps in [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("heun", 25), ("heun", 10)]:
        net = Counting(MLPDenoiser(2).to(dev))
        den = Denoiser(net, sched, "eps")
        t0 = time.perf_counter()
        sample(
            den,
            (a.n, 2),
            sampler=sampler,
            steps=steps,
            generator=torch.Generator().manual_seed(0),
            device=dev,
        )
        dt = time.perf_counter() - t0
        evals = SAMPLERS[sampler].evaluations(steps)
        assert net.calls == evals, (sampler, steps, net.calls, evals)
        print(f"| {sampler} | {steps} | {a.n / dt:,.0f} | {evals} |")

    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    den = Denoiser(GaussianDenoiserNet(mu, cov), sched, "x0")
    ref = sample(
        den,
        (a.n, 2),
        sampler="ddpm",
        steps=1000,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    ref_cov = torch.cov(ref.T)
    print(f"\n## accuracy on N(μ, Σ) (n = {a.n}); DDPM-1000: max|Σ̂−Σ| = {float((ref_cov - cov).abs().max()):.4f}")
    print("| sampler | steps | max abs(Σ̂ − Σ) | max abs(Σ̂ − Σ_DDPM1000) | max abs(μ̂ − μ) |\n|---|---|---|---|---|")
    for sampler in ("ddim", "heun"):
        for steps in (10, 20, 50):
            x = sample(
                den,
                (a.n, 2),
                sampler=sampler,
                steps=steps,
                eta=0.0,
                generator=torch.Generator().manual_seed(1),
                dtype=torch.float64,
            )
            c = torch.cov(x.T)
            print(
                f"| {sampler} | {steps} | {float((c - cov).abs().max()):.4f} | "
                f"{float((c - ref_cov).abs().max()):.4f} | {float((x.mean(0) - mu).abs().max()):.4f} |"
            )


if __name__ == "__main__":
    main()
