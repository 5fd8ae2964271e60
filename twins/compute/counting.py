"""Count the tensor operations a piece of code runs, and the host syncs among them (issue 20's per-step figures).

A torch dispatch mode sees every ATen call on any device: **kernels** are the calls that do work (views and other
metadata operations left out), **host syncs** the calls that make the host wait for tensor data: a scalar read
(``.item()``, ``bool(t)``: ATen's ``_local_scalar_dense``), ``nonzero``, ``masked_select``, ``unique``, ``equal``,
``repeat_interleave`` with tensor repeats, and ``bincount`` (on CUDA its output size reads the maximum); on a GPU
also every copy from the device to the host that is not ``non_blocking`` (``.cpu()``, ``.numpy()`` via ``.cpu()``):
on a CPU run those copies do not happen, so the CPU figure is a lower bound of the GPU's.
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
        if name in HOST_SYNC_OPS or blocking_device_read(name, args, kwargs or {}):
            self.syncs += 1
            self.sync_ops[name] = self.sync_ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _device_type(x) -> str | None:
    d = getattr(x, "device", x)
    return getattr(d, "type", d if isinstance(d, str) else None)


def blocking_device_read(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether ``name(*args, **kwargs)`` copies a device tensor to the host and waits for it: ``_to_copy`` (``.to``,
    ``.cpu()``) or ``copy_`` into a host tensor, without ``non_blocking``."""
    if name == "_to_copy" and args:
        src, dst = args[0], kwargs.get("device")
        blocking = not kwargs.get("non_blocking", False)
    elif name == "copy_" and len(args) >= 2:
        dst, src = args[0], args[1]
        blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    else:
        return False
    src_type, dst_type = _device_type(src), _device_type(dst)
    return blocking and src_type not in (None, "cpu", "meta") and dst_type == "cpu"


def count_per_step(step, steps: int, extra_kernels=lambda: 0) -> dict:
    """Kernels and host syncs per call of ``step()`` over ``steps`` calls. ``extra_kernels()``: kernels the
    dispatch mode cannot see (e.g. calls of a compiled C++ step), read after the calls."""
    with OpCounter() as c:
        for _ in range(steps):
            step()
    return {"kernels_per_step": (c.kernels + extra_kernels()) / steps, "host_syncs_per_step": c.syncs / steps,
            "sync_ops": {k: v / steps for k, v in sorted(c.sync_ops.items())}}
