"""Which engine of a pool builds what: weighted rendezvous (highest random weight) hashing.

Every engine scores every key; a key goes to the engine with the highest score, and when that
one is down, to the next. The score is ``-weight / ln(u)``, with ``u`` in (0, 1) taken from
``sha256(name + "\\0" + key)``: the winner is drawn in proportion to the weights, the same
answer on every machine and in every process (never Python's ``hash()``, which is salted per
process), and the order of the pool's list does not matter. Adding an engine moves only the
keys it wins, about ``weight / total weight`` of them; removing one moves only its own keys.

The run's key for a service is its leaf tier's name, so a tier's services share an engine and
its layers stay warm there; this module takes any string.

The pool comes from ``PIPELINE_ENGINES`` (or the config): ``name=url`` entries separated by
commas, each with an optional ``;weight=N``, e.g.
``a=tcp://127.0.0.1:12341,b=unix:///run/dagger/engine.sock;weight=2``.
"""

from __future__ import annotations

import hashlib
import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError, UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# The runner URLs a Dagger client reaches an engine by, each with an example for the fix.
SCHEMES = {
    "unix": "unix:///run/dagger/engine.sock",
    "tcp": "tcp://127.0.0.1:12341",
    "kube-pod": "kube-pod://dagger-engine-abc12?namespace=dagger",
    "docker-container": "docker-container://dagger-engine",
    "ssh": "ssh://builder@build-1.example.com",
}
EXAMPLE = "a=tcp://127.0.0.1:12341,b=unix:///run/dagger/engine.sock;weight=2"
_UNIT = float(1 << 53)  # a float holds 53 bits exactly: u is (n + 0.5) / 2**53, never 0 or 1


@dataclass(frozen=True)
class Engine:
    name: str
    url: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight) or self.weight <= 0:
            msg = f"engine {self.name}: weight {self.weight} is not a positive number"
            raise ValueError(msg)


class NoEngineError(PipelineError):
    """Every engine of the pool is down: nothing can be placed."""

    def __init__(self, down: Sequence[str]) -> None:
        self.down = tuple(down)
        names = ", ".join(self.down) if self.down else "(the pool is empty)"
        super().__init__(
            f"no engine of the pool is up (down: {names}); fix: start one of them, or name "
            "a reachable engine in PIPELINE_ENGINES"
        )


def _bad(where: str, entry: str, problem: str, fix: str) -> UsageError:
    return UsageError(f"{where}: {entry!r} {problem}; fix: {fix}")


def _url(url: str, where: str, entry: str) -> str:
    scheme, sep, rest = url.partition("://")
    schemes = ", ".join(SCHEMES)
    if not sep or scheme not in SCHEMES:
        got = f"scheme {scheme!r}" if sep else "no scheme"
        raise _bad(
            where,
            entry,
            f"has {got}; an engine URL's scheme is one of {schemes}",
            f"write the URL as e.g. {SCHEMES['tcp']} or {SCHEMES['unix']}",
        )
    if not rest or any(c.isspace() or not c.isprintable() for c in url):
        raise _bad(
            where,
            entry,
            f"has no {scheme} address after {scheme}:// (or one with spaces)",
            f"give the engine's address, e.g. {SCHEMES[scheme]}",
        )
    if scheme == "unix" and not rest.startswith("/"):
        raise _bad(
            where,
            entry,
            "names no absolute socket path",
            f"use three slashes and the full path, e.g. {SCHEMES['unix']}",
        )
    if scheme == "tcp":
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or not parts.hostname or not port:
            raise _bad(
                where,
                entry,
                "needs a host and a port number (1 to 65535)",
                f"give both, e.g. {SCHEMES['tcp']}",
            )
    return url


def _weight(text: str, where: str, entry: str) -> float:
    key, sep, value = text.partition("=")
    if key.strip() != "weight" or not sep:
        raise _bad(
            where,
            entry,
            f"has an unknown option {text!r} after ';' (only weight=N is known)",
            "write ';weight=2' after the URL, or drop the ';'",
        )
    try:
        weight = float(value)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight) or weight <= 0:
        raise _bad(
            where,
            entry,
            f"has weight {value.strip()!r}, which is not a positive number",
            "give a number above 0, e.g. ';weight=2' (the default is 1)",
        )
    return weight


def parse(text: str, where: str) -> list[Engine]:
    """The pool a ``PIPELINE_ENGINES`` value names (``where`` says where it came from, for
    errors); empty text names no pool."""
    if not text.strip():
        return []
    engines: list[Engine] = []
    seen: dict[str, str] = {}  # name or URL -> the entry that used it first
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise _bad(
                where,
                text,
                "has an empty entry (two commas, or one at an end)",
                f"separate name=url entries by single commas, e.g. {EXAMPLE}",
            )
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep:
            raise _bad(where, entry, "is not name=url", f"name each engine, e.g. {EXAMPLE}")
        if not NAME.match(name):
            raise _bad(
                where,
                entry,
                f"has the name {name!r}, which is not 1 to 31 lower-case letters, digits "
                "and '-' starting with a letter",
                "name the engine e.g. 'a', 'engine-1' or 'gpu-2'",
            )
        url, semi, option = rest.partition(";")
        url = _url(url.strip(), where, entry)
        weight = _weight(option, where, entry) if semi else 1.0
        for what, value in (("name", name), ("URL", url)):
            if value in seen:
                raise _bad(
                    where,
                    entry,
                    f"repeats the {what} {value!r} of {seen[value]!r}",
                    f"give each engine one entry, its own name and URL, e.g. {EXAMPLE}",
                )
            seen[value] = entry
        engines.append(Engine(name=name, url=url, weight=weight))
    return engines


def score(key: str, engine: Engine) -> float:
    """How much ``engine`` wants ``key``: -weight / ln(u), u uniform in (0, 1) from sha256."""
    digest = hashlib.sha256(f"{engine.name}\0{key}".encode()).digest()
    u = ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / _UNIT
    return -engine.weight / math.log(u)


def order(key: str, engines: Sequence[Engine]) -> list[Engine]:
    """Every engine, the one ``key`` prefers first; equal scores fall to the smaller name."""
    return sorted(engines, key=lambda engine: (-score(key, engine), engine.name))


def place(
    keys: Mapping[str, str],
    engines: Sequence[Engine],
    down: frozenset[str] = frozenset(),
) -> dict[str, Engine]:
    """Each item (of ``keys``: item -> its key) on the first engine of its key's order that is
    not ``down`` (by name)."""
    up = [engine for engine in engines if engine.name not in down]
    if not up:
        raise NoEngineError(sorted(engine.name for engine in engines))
    return {item: order(key, up)[0] for item, key in keys.items()}
