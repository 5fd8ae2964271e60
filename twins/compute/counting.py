"""Count the tensor operations a piece of code runs, and the host syncs among them (issue 20's per-step figures).

A torch dispatch mode sees every ATen call on any device: **kernels** are the calls that do work (views and other
metadata operations left out), **host syncs** the calls that make the host wait for tensor data: a scalar read
(``.item()``, ``bool(t)``: ATen's ``_local_scalar_dense``), ``nonzero``, ``masked_select``, ``unique``, ``equal``,
``repeat_interleave`` with tensor repeats, and ``bincount`` (on CUDA its output size reads the maximum).
Counted, not estimated: these are the calls made.
"""
from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

# operations whose result the host must wait for (a value, or a data-dependent output size)
HOST_SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select", "unique",
                           "_unique", "_unique2", "unique_consecutive", "unique_dim", "repeat_interleave", "bincount",
                           "item"})


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` then ``c.kernels``, ``c.syncs`` and ``c.sync_ops`` (syncs by operation)."""

    def __init__(self):
        super().__init__()
        self.kernels, self.syncs, self.sync_ops = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ret = func._schema.returns
        alias = ret[0].alias_info if len(ret) == 1 else None
        if alias is None or alias.is_write:  # a view or other alias of an input does no work; in-place ops do
            self.kernels += 1
        name = func._schema.name.split("::")[-1]
        if name in HOST_SYNC_OPS:
            self.syncs += 1
            self.sync_ops[name] = self.sync_ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def count_per_step(step, steps: int, extra_kernels=lambda: 0) -> dict:
    """Kernels and host syncs per call of ``step()`` over ``steps`` calls. ``extra_kernels()``: kernels the
    dispatch mode cannot see (e.g. calls of a compiled C++ step), read after the calls."""
    with OpCounter() as c:
        for _ in range(steps):
            step()
    return {"kernels_per_step": (c.kernels + extra_kernels()) / steps, "host_syncs_per_step": c.syncs / steps,
            "sync_ops": {k: v / steps for k, v in sorted(c.sync_ops.items())}}
