"""Device choice, batch planning, execution backends (local, Ray) and the compute/energy account."""
from .device import resolve_device, resolve_dtype

__all__ = ["resolve_device", "resolve_dtype"]
