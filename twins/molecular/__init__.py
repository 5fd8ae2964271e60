"""Molecular twin: Brownian dynamics with Doi reactions (drug, target, off-target) and an LJ fluid."""
from .model import LJFluidTwin, MolecularTwin, Species  # noqa: F401
