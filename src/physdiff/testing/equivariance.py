"""Equivariance tests for particle networks, in the spirit of e3nn's ``assert_equivariant``.

Declare how every input and output transforms (its *kind*), and the helper checks
f(g·inputs) = g·f(inputs) for random group elements g of each requested type::

    from physdiff.testing.equivariance import assert_equivariant

    assert_equivariant(
        model,
        dict(x_t=x, t=t, known=known, mask=mask, edges=edges),
        dict(x_t="particles", t="invariant", known="known", mask="mask", edges="edges"),
        out_kinds="vectors",
    )

Kinds (K = particle axis, D = space dimension; every kind with a K axis is permuted along it):

=================  =====================  ====================================================
kind               layout                 rotation Q / translation c
=================  =====================  ====================================================
``particles``      ``[..., K, 2D]``       positions ``[..., :D]`` ↦ Q r + c, velocities ↦ Q v
``known``          ``[..., K, 2D]``       as ``particles``, but c is added only where the
                                          (single) ``mask`` input is 1 (zero = unknown)
``points``         ``[..., K, n·D]``      each D-block ↦ Q r + c
``vectors``        ``[..., K, n·D]``      each D-block ↦ Q v (translation-invariant)
``node_features``  ``[..., K, H]``        invariant
``mask``           ``[..., K, C]``        invariant (same as ``node_features``)
``node_scalars``   ``[..., K]``           invariant, e.g. masses ``[B, K]``
``edges``          ``[..., K, K]``        invariant, permuted on both axes
``invariant``      anything               untouched (e.g. the diffusion time ``t``)
=================  =====================  ====================================================

Transformations tested (``group``): ``rotation`` (det Q = +1), ``reflection`` (det Q = −1),
``translation``, ``permutation``, each alone, then all of them at once (``combined``). One Q, c and
permutation is drawn per call and shared by the whole batch. Default tolerances by dtype: float64
1e-9, float32 1e-4, half types 1e-2, applied as ``error ≤ tol · max(1, max|output|)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from physdiff.data.augment import (
    permute_edges,
    permute_particles,
    random_orthogonal,
    rotate_vectors,
)

__all__ = ["assert_equivariant", "equivariance_errors", "KINDS", "GROUP", "DEFAULT_TOL"]

KINDS = (
    "particles",
    "known",
    "points",
    "vectors",
    "node_features",
    "mask",
    "node_scalars",
    "edges",
    "invariant",
)
GROUP = ("rotation", "reflection", "translation", "permutation")
DEFAULT_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _transform(
    x: Tensor | None,
    kind: str,
    q: Tensor | None,
    c: Tensor | None,
    perm: Tensor | None,
    mask: Tensor | None,
) -> Tensor | None:
    """Apply the group element (Q, c, P) to one tensor of the given kind."""
    if x is None or kind == "invariant":
        return x
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if kind in ("particles", "known", "points", "vectors"):
        if q is not None:
            x = rotate_vectors(x, q.to(x.dtype))
        if c is not None and kind != "vectors":
            d = c.shape[-1]
            if kind == "points":
                x = x + c.to(x.dtype).repeat(x.shape[-1] // d)
            else:
                shift = c.to(x.dtype) * (1.0 if kind == "particles" else mask[..., :d])
                x = torch.cat([x[..., :d] + shift, x[..., d:]], dim=-1)
    if perm is not None:
        if kind == "edges":
            x = permute_edges(x, perm)
        else:
            x = permute_particles(x, perm, axis=-1 if kind == "node_scalars" else -2)
    return x


def _particle_count(inputs: Mapping[Any, Tensor | None], kinds: Mapping[Any, str]) -> int | None:
    for key, kind in kinds.items():
        x = inputs[key]
        if x is not None and kind not in ("invariant",):
            return x.shape[-1] if kind in ("node_scalars", "edges") else x.shape[-2]
    return None


def _space_dim(inputs: Mapping[Any, Tensor | None], kinds: Mapping[Any, str], dim: int | None) -> int | None:
    if dim is not None:
        return dim
    for key, kind in kinds.items():
        if kind in ("particles", "known") and inputs[key] is not None:
            return inputs[key].shape[-1] // 2
    return None


def equivariance_errors(
    fn: Callable[..., Any],
    inputs: Mapping[str, Tensor | None] | Sequence[Tensor | None],
    kinds: Mapping[str, str] | Sequence[str],
    *,
    out_kinds: str | Sequence[str],
    group: Sequence[str] = GROUP,
    dim: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Max absolute error of f(g·inputs) − g·f(inputs) per transformation (plus ``combined``).

    ``inputs`` is a mapping (passed as keyword arguments) or a sequence (positional), with ``kinds``
    of the same structure. ``out_kinds`` is one kind for a tensor output or a sequence of kinds for a
    tuple output. ``dim`` (D) is inferred from ``particles``/``known`` inputs when not given.
    Also returns ``scale`` = max |f(inputs)|.
    """
    if isinstance(inputs, Mapping):
        in_map, kind_map = dict(inputs), dict(kinds)  # type: ignore[arg-type]

        def call(args: dict) -> Any:
            return fn(**args)
    else:
        in_map, kind_map = dict(enumerate(inputs)), dict(enumerate(kinds))  # type: ignore[arg-type]

        def call(args: dict) -> Any:
            return fn(*(args[i] for i in range(len(args))))

    if set(in_map) != set(kind_map):
        raise ValueError(f"inputs and kinds differ: {sorted(map(str, in_map))} vs {sorted(map(str, kind_map))}")
    unknown = set(group) - set(GROUP)
    if unknown:
        raise ValueError(f"unknown transformations {sorted(unknown)}; expected a subset of {GROUP}")
    single = isinstance(out_kinds, str)
    out_kind_list = [out_kinds] if single else list(out_kinds)
    masks = [in_map[k] for k, kind in kind_map.items() if kind == "mask"]
    mask = masks[0] if len(masks) == 1 else None
    if "known" in kind_map.values() and mask is None:
        raise ValueError("kind 'known' needs exactly one input of kind 'mask'")

    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    d = _space_dim(in_map, kind_map, dim)
    k = _particle_count(in_map, kind_map)
    geometric = {"rotation", "reflection", "translation"} & set(group)
    if geometric and d is None:
        raise ValueError("cannot infer the space dimension D: pass dim=")

    q_rot = random_orthogonal(1, d, gen, reflections=False, dtype=torch.float64)[0] if d else None
    q_ref = q_rot.clone() if d else None
    if q_ref is not None:
        q_ref[:, 0] = -q_ref[:, 0]  # det −1
    c = 2.0 * torch.randn(d, generator=gen, dtype=torch.float64) if d else None
    perm = None
    if k is not None and k > 1:
        perm = torch.randperm(k, generator=gen)
        if torch.equal(perm, torch.arange(k)):
            perm = torch.roll(perm, 1)

    def as_tuple(out: Any) -> list[Tensor]:
        outs = [out] if single else list(out)
        if len(outs) != len(out_kind_list):
            raise ValueError(f"fn returned {len(outs)} outputs but {len(out_kind_list)} out_kinds")
        return outs

    with torch.no_grad():
        ref = as_tuple(call(in_map))
        cases: dict[str, tuple] = {}
        if "rotation" in group:
            cases["rotation"] = (q_rot, None, None)
        if "reflection" in group:
            cases["reflection"] = (q_ref, None, None)
        if "translation" in group:
            cases["translation"] = (None, c, None)
        if "permutation" in group and perm is not None:
            cases["permutation"] = (None, None, perm)
        if len(cases) > 1:
            q_all = q_ref if "reflection" in group else (q_rot if "rotation" in group else None)
            cases["combined"] = (
                q_all,
                c if "translation" in group else None,
                perm if "permutation" in group else None,
            )
        errors: dict[str, float] = {}
        for name, (q, shift, p) in cases.items():
            moved = {key: _transform(x, kind_map[key], q, shift, p, mask) for key, x in in_map.items()}
            outs = as_tuple(call(moved))
            err = 0.0
            for o_ref, o_new, kind in zip(ref, outs, out_kind_list, strict=True):
                # outputs are transformed with the *unmoved* mask; 'known' outputs are unusual
                expected = _transform(o_ref, kind, q, shift, p, mask)
                err = max(err, (o_new - expected).abs().max().item())
            errors[name] = err
        errors["scale"] = max(o.abs().max().item() for o in ref)
    return errors


def assert_equivariant(
    fn: Callable[..., Any],
    inputs: Mapping[str, Tensor | None] | Sequence[Tensor | None],
    kinds: Mapping[str, str] | Sequence[str],
    *,
    out_kinds: str | Sequence[str],
    group: Sequence[str] = GROUP,
    tol: float | None = None,
    dim: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Assert that ``fn`` is equivariant; see the module docstring for kinds and transformations.

    Raises ``AssertionError`` naming each failing transformation with its max error. Returns the
    errors (as :func:`equivariance_errors`) when all pass. ``tol`` defaults by the dtype of the first
    floating input (float64 1e-9, float32 1e-4) and is relative to max(1, max|output|).
    """
    if tol is None:
        values = inputs.values() if isinstance(inputs, Mapping) else inputs
        dtype = next((x.dtype for x in values if x is not None and x.is_floating_point()), torch.float32)
        tol = DEFAULT_TOL.get(dtype, 1e-4)
    errors = equivariance_errors(fn, inputs, kinds, out_kinds=out_kinds, group=group, dim=dim, generator=generator)
    bound = tol * max(1.0, errors["scale"])
    failed = {name: e for name, e in errors.items() if name != "scale" and not e <= bound}
    if failed:
        detail = ", ".join(f"{name}: max error {e:.3e}" for name, e in failed.items())
        raise AssertionError(
            f"not equivariant under {detail} (tolerance {bound:.1e}, output scale {errors['scale']:.3e})"
        )
    return errors
