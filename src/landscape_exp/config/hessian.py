"""The ``hessian`` section of the Hessian tasks: which data, which curvature, and what the spectrum
report computes (:class:`SpectrumSettings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from landscape_exp.config.choices import CURVATURES, SPECTRAL_METHODS, SPLITS
from landscape_exp.config.reader import Section
from landscape_exp.errors import UserError, choice_error


@dataclass(frozen=True)
class SpectrumSettings:
    """What :func:`landscape_exp.hessian.report.spectrum_report` computes and how hard it tries.

    ``tol``: a pair has converged when ``||H v - lambda v|| <= tol * ||H||`` (``||H||`` estimated
    by the largest Ritz value in magnitude; for the bottom pairs, solved on ``H - lambda_max I``,
    the spread ``lambda_max - lambda_min``); ARPACK's relative accuracy for ``eigsh``.
    ``max_iter`` caps Lanczos steps (default ``min(dim, 300)``), power iterations per pair
    (1000) or ARPACK restarts.  ``trace_probes=0`` skips the trace, ``density_probes=0`` the
    density, ``bottom=False`` the bottom pairs; ``blocks=n > 0`` adds the top-n eigenpairs
    and the smallest eigenpair of each layer's diagonal block.
    """

    k: int = 5
    method: str = "lanczos"
    tol: float = 1e-5
    max_iter: int | None = None
    trace_probes: int = 50
    density_probes: int = 3
    density_iters: int = 80
    density_points: int = 1000
    seed: int = 0
    bottom: bool = True
    blocks: int = 0

    def __post_init__(self) -> None:
        def pos_int(name: str, v: object, zero_ok: bool = False) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
                raise UserError(f"hessian.{name}={v!r} must be an integer >= {0 if zero_ok else 1}")

        pos_int("k", self.k)
        if self.method not in SPECTRAL_METHODS:
            raise choice_error("hessian.method", self.method, SPECTRAL_METHODS)
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise UserError(f"hessian.tol={self.tol!r} must be a number in (0, 1), e.g. 1e-4")
        if self.max_iter is not None:
            pos_int("max_iter", self.max_iter)
        pos_int("trace_probes", self.trace_probes, zero_ok=True)
        if self.trace_probes == 1:
            raise UserError("hessian.trace_probes=1 gives no standard error; use 0 (no trace) or >= 2")
        pos_int("density.probes", self.density_probes, zero_ok=True)
        pos_int("density.iters", self.density_iters)
        pos_int("density.num_points", self.density_points)
        if self.density_points < 2:
            raise UserError(f"hessian.density.num_points={self.density_points} must be >= 2")
        pos_int("seed", self.seed, zero_ok=True)
        pos_int("blocks", self.blocks, zero_ok=True)


@dataclass(frozen=True)
class HessianSettings:
    """The ``hessian`` section of the Hessian tasks."""

    split: str
    num_samples: int | None  # None: the whole split
    seed: int
    batch_size: int | None  # None: chosen for the device (:meth:`batch_size_for`)
    spectrum: SpectrumSettings
    curvature: str = "hessian"  # hessian | ggn | fisher

    def batch_size_for(self, device: torch.device) -> int:
        if self.batch_size is not None:
            return self.batch_size
        # The double backward keeps about three times the activations of an evaluation pass.
        return 512 if device.type == "cuda" else 256

    def identity(self) -> dict[str, Any]:
        """What determines the values (the batch size only changes roundoff). The curvature is
        named only when it is not the Hessian, so files made before it existed still match."""
        s = self.spectrum
        extra = {"curvature": self.curvature} if self.curvature != "hessian" else {}
        return {"split": self.split, "num_samples": self.num_samples, "seed": self.seed, "method": s.method,
                "tol": s.tol, "max_iter": s.max_iter, **extra}

    @classmethod
    def read(cls, n: Section) -> HessianSettings:
        seed = n.int("seed", 0)
        # Sections a task does not use are absent from its YAML: those stages are off (0 probes).
        dens = n.node("density") if n.has("density") else None
        spectrum = SpectrumSettings(
            k=n.raw("k") if n.has("k") else 1, method=n.str("method"), tol=n.float("tol"),
            max_iter=n.raw("max_iter"), trace_probes=n.raw("trace_probes") if n.has("trace_probes") else 0,
            density_probes=dens.raw("probes") if dens else 0, density_iters=dens.raw("iters") if dens else 1,
            density_points=dens.raw("num_points") if dens else 2, seed=seed,
            blocks=n.raw("blocks") if n.has("blocks") else 0,
        )
        return cls(n.str("split", choices=SPLITS), n.int("num_samples", 1, null=True), seed,
                   n.int("batch_size", 1, null=True), spectrum, n.str("curvature", choices=CURVATURES))
