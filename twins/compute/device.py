"""Pick the device and dtype a run asked for, with errors that say what is available."""
from __future__ import annotations

import re

import torch

from twins.core.errors import ConfigError
from twins.core.io import describe  # noqa: F401  (re-exported: a device in words)


def check_device_spec(spec: str) -> str:
    """``spec`` normalised (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), without asking what this machine has."""
    s = str(spec).strip().lower()
    if s not in ("auto", "cpu") and not re.fullmatch(r"cuda(?::\d+)?", s):
        raise ConfigError("compute.device", spec, "auto, cpu, cuda or cuda:N")
    return s


def resolve_device(spec: str) -> torch.device:
    """``auto`` → the first CUDA device if any, else CPU; ``cpu``; ``cuda``; ``cuda:N``."""
    spec = check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not torch.cuda.is_available():
        raise ConfigError("compute.device", spec, "auto or cpu on this machine",
                          "PyTorch sees no CUDA device here (CPU build, or no GPU/driver).")
    n = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if n >= count:
        raise ConfigError("compute.device", spec, f"cuda:0..cuda:{count - 1}")
    return torch.device(f"cuda:{n}")


def driver_device(cfg) -> torch.device:
    """The device this process builds its own twins on (never-stepped views that validate arms and draw
    figures, a search's parameter probe): ``compute.device`` — except under ``compute=ray``, where the worlds
    run on the cluster's workers and this machine (the driver) may have no GPU: there, the CPU when this
    machine lacks the device."""
    c = cfg.compute
    if str(c.get("backend", "local")) == "ray":
        check_device_spec(c.device)
        try:
            return resolve_device(c.device)
        except ConfigError:
            return torch.device("cpu")
    return resolve_device(c.device)


def manifest_devices(cfg, driver: torch.device, devices: list[str] | None = None) -> dict:
    """The manifest's device fields: ``device``, where the worlds ran (the plan's ``devices``; by default those
    of :func:`twins.compute.plan.targets` for ``cfg``: under ``compute=ray`` the cluster's), and, where it
    differs, ``driver_device``: this process's, which only builds never-stepped twins (see
    :func:`driver_device`)."""
    if devices is None:
        from .plan import targets

        devices = targets(cfg)[0]
    if str(cfg.compute.get("backend", "local")) == "ray":
        kinds = dict.fromkeys(torch.device(d).type for d in devices)
        where = ", ".join("cuda (Ray workers' GPUs)" if k == "cuda" else f"{k} (Ray workers)" for k in kinds)
    else:
        where = ", ".join(describe(torch.device(d)) for d in devices)
    here = describe(torch.device(driver))
    return {"device": where} if where == here else {"device": where, "driver_device": here}


def set_threads(n) -> None:
    """``compute.threads``: torch's intra-op CPU threads for this process (None leaves torch's default)."""
    if n is None:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError("compute.threads", n, "an integer >= 1, or null for torch's default")
    torch.set_num_threads(n)


def resolve_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ConfigError("compute.dtype", name, "float32 or float64")
    return table[name]


