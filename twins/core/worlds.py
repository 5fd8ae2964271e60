"""A batch of worlds: the leading tensor dimension W of every twin.

World ``w`` is replication ``replication[w]`` of policy arm ``arm[w]``. All
worlds of one replication share exogenous noise (the noise is keyed by the
replication, never by the world index), which is what makes a counterfactual
comparison paired.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class WorldBatch:
    seed: int
    replication: torch.Tensor  # int64 [W]
    arm: torch.Tensor  # int64 [W]
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # per-world overrides, leading dim W

    @classmethod
    def replications(cls, seed: int, n: int, first: int = 0, arms: int = 1) -> "WorldBatch":
        """``arms`` policy arms × ``n`` replications, arm-major: world = arm * n + rep."""
        rep = torch.arange(first, first + n, dtype=torch.int64).repeat(arms)
        arm = torch.arange(arms, dtype=torch.int64).repeat_interleave(n)
        return cls(int(seed), rep, arm)

    @property
    def size(self) -> int:
        return int(self.replication.numel())

    def subset(self, index) -> "WorldBatch":
        index = torch.as_tensor(index, dtype=torch.int64)
        return WorldBatch(
            self.seed,
            self.replication[index],
            self.arm[index],
            {k: v[index] for k, v in self.params.items()},
        )

    def to(self, device) -> "WorldBatch":
        return WorldBatch(
            self.seed,
            self.replication.to(device),
            self.arm.to(device),
            {k: v.to(device) for k, v in self.params.items()},
        )
