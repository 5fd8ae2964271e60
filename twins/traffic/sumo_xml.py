"""Reading SUMO's XML safely and with locations, for every SUMO reader of :mod:`twins.traffic.sumo`.

:func:`parse` streams a file (``.gz`` too) through expat with every DOCTYPE, entity declaration and external
entity refused (SUMO files never need one); each error names the file, the line and the element
(:class:`Where`). :class:`Report` collects what an import ignores and gives ONE :class:`SumoImportWarning` per
public call; :func:`sumo_time` reads SUMO's time values.
"""
from __future__ import annotations

import gzip
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable
from xml.parsers import expat

from twins.core.errors import ConfigError


class SumoImportWarning(UserWarning):
    """SUMO input the twin does not model was ignored (the message lists it with counts)."""


# --------------------------------------------------------------------------------------------
# safe streaming parser
# --------------------------------------------------------------------------------------------
class _Refused(Exception):
    pass


class Where:
    """Where the parser is: file, line, current element (for error messages)."""

    def __init__(self, path: Path):
        self.path = path
        self.line = 0
        self.stack: list[str] = []

    def __str__(self) -> str:
        el = f", in <{self.stack[-1]}>" if self.stack else ""
        return f"{self.path}, line {self.line}{el}"

    def error(self, field: str, value, valid: str, hint: str | None = None) -> ConfigError:
        h = f"At {self}."
        return ConfigError(field, value, valid, f"{h} {hint}" if hint else h)


def check_file(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(what, str(p), "an existing SUMO file",
                          f"No file at {p.resolve()}. Check the path (relative paths in a .sumocfg are "
                          "relative to the .sumocfg's folder) or pass the file explicitly.")
    return p


def parse(path: Path, start: Callable, end: Callable | None = None) -> Where:
    """Stream ``path`` through expat; ``start(tag, attrs, where)`` / ``end(tag, where)``."""
    where = Where(path)
    p = expat.ParserCreate()
    try:
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    except AttributeError:  # pragma: no cover
        pass

    def refuse_doctype(name, *_):
        where.line = p.CurrentLineNumber
        raise _Refused(f"a DOCTYPE declaration (<!DOCTYPE {name} ...>)")

    def refuse_entity(name, *_):
        where.line = p.CurrentLineNumber
        raise _Refused(f"an entity declaration ({name!r})")

    def refuse_external(*_):
        where.line = p.CurrentLineNumber
        raise _Refused("an external entity reference")

    p.StartDoctypeDeclHandler = refuse_doctype
    p.EntityDeclHandler = refuse_entity
    p.UnparsedEntityDeclHandler = refuse_entity
    p.ExternalEntityRefHandler = refuse_external

    stack = where.stack

    def on_start(tag, attrs):
        where.line = p.CurrentLineNumber
        stack.append(tag)
        start(tag, attrs, where)

    def on_end(tag):
        where.line = p.CurrentLineNumber
        if end is not None:
            end(tag, where)
        stack.pop()

    p.StartElementHandler = on_start
    p.EndElementHandler = on_end
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            p.ParseFile(f)
    except _Refused as e:
        raise ConfigError("file", str(path), "SUMO XML without DOCTYPE or entity declarations",
                          f"Line {where.line} contains {e}; entity expansion and external entities are "
                          "refused for safety (SUMO files never need them). Remove the <!DOCTYPE ...> block "
                          "if the file is trusted.") from None
    except expat.ExpatError as e:
        el = f", in <{stack[-1]}>" if stack else ""
        raise ConfigError("file", str(path), "well-formed XML",
                          f"Line {e.lineno}, column {e.offset}{el}: {expat.ErrorString(e.code)}.") from None
    except (OSError, EOFError) as e:
        raise ConfigError("file", str(path), "a readable SUMO XML file", str(e)) from None
    return where


# --------------------------------------------------------------------------------------------
# ignored-feature report: one warning per public call
# --------------------------------------------------------------------------------------------
class Report:
    def __init__(self, what: str):
        self.what = what
        self.counts: Counter[str] = Counter()

    def add(self, item: str, n: int = 1) -> None:
        if n:
            self.counts[item] += n

    def emit(self, stacklevel: int = 3) -> None:
        if not self.counts:
            return
        items = "; ".join(f"{n} × {k}" for k, n in self.counts.items())
        warnings.warn(f"SUMO import of {self.what}: the twin does not model these, so they were ignored: "
                      f"{items}.", SumoImportWarning, stacklevel=stacklevel)


def num(where: Where, attrs: dict, key: str, default=None, *, tag: str | None = None) -> float:
    v = attrs.get(key)
    if v is None:
        if default is None:
            raise where.error(f"{tag or where.stack[-1]}.{key}", None, "a number (the attribute is required)")
        return default
    try:
        return float(v)
    except ValueError:
        raise where.error(f"{tag or where.stack[-1]}[{attrs.get('id', '')}].{key}", v, "a number") from None


def sumo_time(value: str, field: str = "time") -> float:
    """A SUMO time value: seconds, or ``[[d:]h:]m:s``."""
    try:
        return float(value)
    except ValueError:
        pass
    parts = value.split(":")
    try:
        secs = 0.0
        for p, mult in zip(reversed(parts), (1, 60, 3600, 86400)):
            secs += float(p) * mult
        if 1 < len(parts) <= 4:
            return secs
    except ValueError:
        pass
    raise ConfigError(field, value, "a time in seconds or [[d:]h:]m:s")
