"""Flux's normalisation layers with per-sample statistics -> `porting.model` layers
(docs/flux.md#normalisation-flux): `LayerNorm` -> the `layernorm` kind, `GroupNorm` and
`InstanceNorm` -> the `groupnorm` kind, or, where running statistics are used at inference
(`track_stats=true`), the `batchnorm` kind (the same arithmetic as Flux's BatchNorm then).

`LayerNorm`'s fields are the same from Flux 0.12 to 0.16.11 but its `ϵ` enters differently by
version (Flux NEWS, PR #2421 in 0.15.0 and PR #2701 in 0.16.11), and a BSON file does not
record the version: the reader takes it from `flux_version(...)` (`load_model(...,
flux_version=)`, `porting convert --flux-version`) and refuses a LayerNorm without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from porting.errors import PortingError
from porting.flux.fields import Found, _short, activation, array
from porting.flux.functions import function_name, is_function
from porting.io.bsonjl import JuliaStruct
from porting.model import Activation, BatchNorm, GroupNorm, LayerNorm

__all__ = ["flux_version", "groupnorm", "instancenorm", "layernorm", "layernorm_formula"]

_VERSION: ContextVar[tuple[int, ...] | None] = ContextVar("porting_flux_version", default=None)

VERSION_HINT = (
    "Flux.LayerNorm adds ϵ differently by Flux version and the file does not say which wrote "
    "it: <= 0.14 divides by std + ϵ, 0.15.0-0.16.10 by sqrt(var + ϵ^2), >= 0.16.11 by "
    "sqrt(var + ϵ) (docs/flux.md#normalisation-flux); give the version that saved it with "
    "--flux-version (e.g. --flux-version 0.14.22; in Python load_model(..., flux_version=...))"
)


def parse_version(v: object) -> tuple[int, ...]:
    """`"0.16.11"`, `"v0.14"` -> `(0, 16, 11)`, `(0, 14)`; anything else `PortingError`."""
    m = re.fullmatch(r"v?(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?", str(v).strip()) if v else None
    if not isinstance(v, str) or m is None:
        raise PortingError(
            f"flux version {v!r}: expected a Flux release such as 0.14.22 or 0.16.11"
        )
    return tuple(int(g) for g in m.groups() if g is not None)


@contextmanager
def flux_version(v: str | None) -> Iterator[None]:
    """Within it, the Flux version that wrote the model being read (None: unknown)."""
    token = _VERSION.set(None if v is None else parse_version(v))
    try:
        yield
    finally:
        _VERSION.reset(token)


def layernorm_formula(path: str) -> str:
    """The `layernorm` kind's formula for the Flux version in force (`flux_version`)."""
    v = _VERSION.get()
    if v is None:
        raise PortingError(f"{path}: {VERSION_HINT}")
    v3 = (*v, 0)[:3]
    if v3 < (0, 15, 0):  # normalise: (x - μ) / (σ + ϵ), stateless.jl@v0.14.25
        return "std"
    if v3 < (0, 16, 11):  # (x - μ) / sqrt(σ² + ϵ^2), stateless.jl@v0.15.0 .. v0.16.10
        return "eps2"
    return "var"  # NNlib.normalise, normalise.jl@v0.16.11 (NEWS: eps added to the variance)


def _eps(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise PortingError(f"{path}.ϵ: {v!r:.60}; expected a number")
    return float(v)


def _diag(d: Any, lam: Any, path: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(scale, bias, activation) of a LayerNorm's `diag` by version: 0.12 `Diagonal(α, β)` or
    `nothing` with `λ` applied after it; from 0.13 `Scale(scale, bias, σ)` holding the
    activation, or `Base.Fix1(broadcast, λ)`, or `identity` (normalise.jl@v0.12.0, v0.13.0)."""
    kind = _short(d)
    if d is None or kind == "Diagonal":  # Flux 0.12
        act = activation(lam, f"{path}.λ")
        if d is None:
            return None, None, act
        if len(d.data) != 2:
            raise PortingError(
                f"{path}.diag: a Diagonal with {len(d.data)} fields; expected (α, β)"
            )
        return array(d.data[0], f"{path}.diag", "α"), array(d.data[1], f"{path}.diag", "β"), act
    if kind == "Scale":
        if len(d.data) != 3:
            raise PortingError(
                f"{path}.diag: a Scale with {len(d.data)} fields; expected (scale, bias, σ)"
            )
        s = array(d.data[0], f"{path}.diag", "scale")
        b = d.data[1]
        b = np.zeros_like(s) if b is False else array(b, f"{path}.diag", "bias")
        return s, b, activation(d.data[2], f"{path}.diag.σ")
    if kind == "Fix1" and len(d.data) == 2 and function_name(d.data[0]) == "Base.broadcast":
        return None, None, activation(d.data[1], f"{path}.diag.x")
    if is_function(d):
        return None, None, activation(d, f"{path}.diag")
    name = d.name if isinstance(d, JuliaStruct) else type(d).__name__
    raise PortingError(
        f"{path}.diag: a {name}; expected Flux's Scale (affine), Base.Fix1(broadcast, λ) or a "
        "function"
    )


def layernorm(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``LayerNorm(λ, diag, ϵ, size, affine)`` (Flux 0.12 on; normalise.jl@v0.14.25)."""
    d = x.data
    if len(d) != 5:
        raise PortingError(
            f"{path}: Flux.LayerNorm with {len(d)} fields; expected (λ, diag, ϵ, size, affine) "
            "(Flux 0.12 on; Flux 0.11's LayerNorm(diag) is not supported)"
        )
    size = d[3]
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,)
    if not (isinstance(size, tuple) and size and all(isinstance(v, int) for v in size)):
        raise PortingError(f"{path}.size: {size!r:.60}; expected a tuple of integers")
    eps = _eps(d[2], path)
    scale, bias, act = _diag(d[1], d[0], path)
    formula = layernorm_formula(path)
    try:
        layer = LayerNorm(tuple(size), scale, bias, eps=eps, formula=formula)
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    what = f"Flux.LayerNorm({', '.join(map(str, size))}, ϵ={eps:g}"
    what += ("" if scale is not None else ", affine=false") + f"): formula {formula} ("
    what += {"std": "std + ϵ", "eps2": "sqrt(var + ϵ^2)", "var": "sqrt(var + ϵ)"}[formula] + ")"
    out.append(Found(layer, path, what))
    if act != "identity":
        out.append(Found(Activation(act), path, f"LayerNorm's λ = {act}"))


def _affine(d: Any, path: str, beta_at: int, affine: bool) -> tuple[Any, Any]:
    if not affine:
        return None, None
    return array(d[beta_at + 1], path, "γ"), array(d[beta_at], path, "β")


def _check_active(active: Any, kind: str, path: str) -> None:
    if active is True:
        raise PortingError(
            f"{path}: {kind} saved with active=true (trainmode!: the batch's statistics, "
            "always); call testmode!(model) or Flux.trainmode!(model, :auto) before saving"
        )


def _finish(out: list[Found], layer: Any, path: str, what: str, lam: Any, kind: str) -> None:
    out.append(Found(layer, path, what))
    act = activation(lam, f"{path}.λ")
    if act != "identity":
        out.append(Found(Activation(act), path, f"{kind}'s λ = {act}"))


def _running(mu: Any, var: Any, g: Any, b: Any, eps: float, momentum: Any) -> BatchNorm:
    """An InstanceNorm's or GroupNorm's `track_stats=true` at inference: a `batchnorm` of the
    per-channel running `μ`, `σ²` and, when affine, `γ`, `β`."""
    p = None if g is None else np.concatenate([g.reshape(-1), b.reshape(-1)])
    return BatchNorm(mu, var, p, eps=eps, momentum=float(momentum))


def instancenorm(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``InstanceNorm(λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active, chs)`` (Flux
    0.12 on, normalise.jl@v0.14.25): each sample's own statistics over the spatial dimensions,
    per channel (`groupnorm` with G = C); with `track_stats` the running `μ`, `σ²` at
    inference (`batchnorm`)."""
    d = x.data
    if len(d) != 11:
        raise PortingError(
            f"{path}: Flux.InstanceNorm with {len(d)} fields; expected 11 (λ, β, γ, μ, σ², ϵ, "
            "momentum, affine, track_stats, active, chs: Flux 0.12 on)"
        )
    affine, track, chs = bool(d[7]), bool(d[8]), d[10]
    _check_active(d[9], "InstanceNorm", path)
    if not isinstance(chs, int) or isinstance(chs, bool):
        raise PortingError(f"{path}.chs: {chs!r:.40}; expected the number of channels")
    g, b = _affine(d, path, 1, affine)
    eps = _eps(d[5], path)
    try:
        if track:
            mu, var = array(d[3], path, "μ"), array(d[4], path, "σ²")
            layer: Any = _running(mu, var, g, b, eps, d[6])
            what = f"Flux.InstanceNorm({chs}, track_stats=true): running statistics"
        else:
            layer = GroupNorm(chs, chs, g, b, eps=eps)
            what = f"Flux.InstanceNorm({chs}, ϵ={eps:g}" + (", affine=true)" if affine else ")")
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    _finish(out, layer, path, what, d[0], "InstanceNorm")


def groupnorm(x: JuliaStruct, path: str, out: list[Found]) -> None:
    """``GroupNorm(G, λ, β, γ, μ, σ², ϵ, momentum, affine, track_stats, active, chs)`` (Flux
    0.12 on; μ, σ² are always `nothing` from 0.14, normalise.jl@v0.14.0): each sample's own
    statistics per group; Flux 0.12-0.13's `track_stats=true` uses the running per-group
    `μ`, `σ²` at inference (`batchnorm`, each channel its group's values)."""
    d = x.data
    if len(d) != 12:
        raise PortingError(
            f"{path}: Flux.GroupNorm with {len(d)} fields; expected 12 (G, λ, β, γ, μ, σ², ϵ, "
            "momentum, affine, track_stats, active, chs: Flux 0.12 on)"
        )
    groups, affine, track, chs = d[0], bool(d[8]), bool(d[9]), d[11]
    _check_active(d[10], "GroupNorm", path)
    for key, v in (("G", groups), ("chs", chs)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PortingError(f"{path}.{key}: {v!r:.40}; expected a positive integer")
    if chs % groups:
        raise PortingError(f"{path}: G={groups} does not divide chs={chs} (Flux requires it)")
    g, b = _affine(d, path, 2, affine)
    eps = _eps(d[6], path)
    try:
        if track:
            mu, var = array(d[4], path, "μ"), array(d[5], path, "σ²")
            if mu.size != groups or var.size != groups:
                raise PortingError(
                    f"μ has {mu.size} and σ² {var.size} values; expected one per group ({groups})"
                )
            rep = chs // groups
            mu, var = np.repeat(mu.reshape(-1), rep), np.repeat(var.reshape(-1), rep)
            layer: Any = _running(mu, var, g, b, eps, d[7])
            what = f"Flux.GroupNorm({chs}, {groups}, track_stats=true): running statistics"
        else:
            layer = GroupNorm(chs, groups, g, b, eps=eps)
            what = (
                f"Flux.GroupNorm({chs}, {groups}, ϵ={eps:g}"
                + ("" if affine else ", affine=false")
                + ")"
            )
    except PortingError as e:
        raise PortingError(f"{path}: {e}") from None
    _finish(out, layer, path, what, d[1], "GroupNorm")
