"""Molecular twin: Brownian dynamics with Doi reactions (drug, target, off-target) and an LJ fluid."""
from .lj import LJFluidTwin  # noqa: F401
from .model import MolecularTwin, Species  # noqa: F401
