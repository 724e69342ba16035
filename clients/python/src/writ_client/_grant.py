"""Grants: what an agent asks for, typed or as the CLI's text form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["Grant", "GrantLike", "format_duration", "parse_duration"]

# The units `writ` accepts in durations (humantime's), in seconds.
_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("ns", "nsec"), 1e-9),
    (("us", "usec", "µs"), 1e-6),
    (("ms", "msec"), 1e-3),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 604800.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_PART = re.compile(r"\s*(\d+)\s*([a-zµ]+)", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parses a duration as ``writ`` does: ``30s``, ``5m``, ``1h30m``,
    ``2h 15min``, ``500ms``."""
    position, total, parts = 0, 0.0, 0
    stripped = text.strip()
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(f"duration {text!r} is not like 30s, 5m or 1h30m")
        unit = match.group(2)
        seconds = _UNITS.get(unit) if unit in _UNITS else _UNITS.get(unit.lower())
        if seconds is None:
            raise ValueError(f"duration {text!r}: unknown unit {unit!r}")
        total += int(match.group(1)) * seconds
        position = match.end()
        parts += 1
    if parts == 0:
        raise ValueError(f"duration {text!r} is empty")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """``timedelta(minutes=5)`` as ``5m``, the form ``parse_duration`` reads."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros < 0:
        raise ValueError("a duration cannot be negative")
    if micros == 0:
        return "0s"
    out = []
    for unit, size in (
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ):
        count, micros = divmod(micros, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _to_timedelta(value: timedelta | float | int | str | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise TypeError("ttl must be a timedelta, a number of seconds or a duration string")
    return timedelta(seconds=float(value))


@dataclass(frozen=True)
class Grant:
    """One grant: a provider's role, scopes within it, and a lifetime.

    ``ttl`` is a ``timedelta``, a number of seconds or a duration string
    (``"5m"``); ``None`` asks for the role's default. Writ clamps it to the
    role's maximum and the task's deadline, with a notice.
    """

    provider: str
    role: str
    scopes: tuple[str, ...] = ()
    ttl: timedelta | None = field(default=None)

    def __init__(
        self,
        provider: str,
        role: str,
        scopes: tuple[str, ...] | list[str] | str = (),
        ttl: timedelta | float | int | str | None = None,
    ) -> None:
        if not provider or not role:
            raise ValueError("a grant names a provider and a role")
        if isinstance(scopes, str):
            scopes = tuple(scope for scope in scopes.split(",") if scope)
        duration = _to_timedelta(ttl)
        if duration is not None and duration.total_seconds() < 0:
            raise ValueError("ttl cannot be negative")
        object.__setattr__(self, "provider", provider)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "scopes", tuple(scopes))
        object.__setattr__(self, "ttl", duration)

    @classmethod
    def parse(cls, text: str) -> Grant:
        """Parses ``provider/role[:scope,scope…][@ttl]``, as ``writ issue
        --grant`` does: ``tokens/orders-read:orders:read@5m``.

        Scopes may contain ``:`` (everything after the first ``:`` is the
        scope list); the TTL follows the last ``@``.
        """
        rest, ttl = text, None
        if "@" in text:
            rest, ttl_text = text.rsplit("@", 1)
            ttl = parse_duration(ttl_text)
        target = rest
        scopes: tuple[str, ...] = ()
        if ":" in rest:
            target, scope_text = rest.split(":", 1)
            scopes = tuple(scope for scope in scope_text.split(",") if scope)
        if "/" not in target:
            raise ValueError(f"grant {text!r} is not provider/role[:scopes][@ttl]")
        provider, role = target.split("/", 1)
        return cls(provider, role, scopes, ttl)

    def __str__(self) -> str:
        text = f"{self.provider}/{self.role}"
        if self.scopes:
            text += ":" + ",".join(self.scopes)
        if self.ttl is not None:
            text += "@" + format_duration(self.ttl)
        return text


#: A grant, or its text form ``provider/role[:scope,…][@ttl]``.
GrantLike = Grant | str


def as_grant(value: GrantLike) -> Grant:
    if isinstance(value, Grant):
        return value
    if isinstance(value, str):
        return Grant.parse(value)
    example = "'tokens/orders-read:orders:read@5m'"
    raise TypeError(f"a grant is a writ_client.Grant or a string like {example}, not {type(value).__name__}")
