"""Kubernetes resource quantities as exact Decimals.

Quotas are compared, hashed and shown to people, so a value must never drift
through binary floating point: "0.1" cpu has to stay 0.1, and "1" and "1000m"
have to be recognisably the same amount.
"""

from __future__ import annotations

import re
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from functools import lru_cache
from typing import Literal

__all__ = [
    "CONTEXT",
    "GI",
    "KI",
    "MI",
    "QuantityError",
    "ResourceKind",
    "canonical",
    "format_at_a_glance",
    "format_percent",
    "format_quantity",
    "format_together",
    "parse_quantity",
    "resource_kind",
    "round_up",
    "utilization_percent",
]

ResourceKind = Literal["cpu", "memory", "count"]

KI = Decimal(1024)
MI = KI**2
GI = KI**3

# Parsed quantities have at most ~64 significant digits, so 200 digits of
# precision keeps every product and quotient we form exact.  Should anything
# ever have to round, it rounds upwards: for a quota, too much is the safe side.
CONTEXT = Context(prec=200, rounding=ROUND_CEILING, traps=[InvalidOperation, DivisionByZero, Overflow])

_MILLI = Decimal("0.001")
_NANO = Decimal("1e-9")

_DECIMAL_SUFFIXES: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES: dict[str, int] = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}

# [0-9] rather than \d: \d also matches non-ASCII digits, which Kubernetes rejects.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|[eE](?P<exponent>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]?))"
)

# Far beyond any real resource (Kubernetes itself tops out near 9.2e18), yet
# small enough that text forms stay short and arithmetic stays exact.
_MAX_TEXT_LENGTH = 64
_MAX_ADJUSTED_EXPONENT = 30
_MIN_ADJUSTED_EXPONENT = -30

_CPU_RESOURCES = frozenset({"cpu", "requests.cpu", "limits.cpu"})
_BYTE_RESOURCES = frozenset({"memory", "requests.memory", "limits.memory", "storage", "requests.storage"})

_EXAMPLES = "like 500m, 2, 1.5Gi or 1e3"


class QuantityError(ValueError):
    """A value that is not a usable Kubernetes quantity; the message names the offending text."""

    def __init__(self, message: str, text: object = None) -> None:
        super().__init__(message)
        self.text = text


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _tidy(value: Decimal) -> Decimal:
    """Drop exponent noise so that parsed values look like what a person would write."""
    if value == 0:
        return Decimal(0)
    with localcontext(CONTEXT):
        if value == value.to_integral_value():
            return Decimal(int(value))
        return value.normalize()


def _check_range(value: Decimal, shown: str) -> Decimal:
    if value != 0 and not _MIN_ADJUSTED_EXPONENT <= value.adjusted() <= _MAX_ADJUSTED_EXPONENT:
        raise QuantityError(f"quantity {shown} is out of range", shown)
    return value


def parse_quantity(text: str | int | Decimal) -> Decimal:
    """Parse a Kubernetes quantity exactly ("500m" -> Decimal("0.5"), "1Ki" -> Decimal(1024)).

    Negative values parse, as they do in Kubernetes; whether they make sense is
    up to the caller.
    """
    # bool is an int subclass, but `cpu: true` in YAML is a mistake, not 1 core.
    if isinstance(text, bool):
        raise QuantityError(f"{text!r} is a boolean, not a quantity", text)
    if isinstance(text, float):
        raise QuantityError(
            f'{text!r} is a floating-point number; write quantities as strings (e.g. "{text!r}") so they stay exact',
            text,
        )
    if isinstance(text, int):
        return _check_range(Decimal(text), str(text))
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise QuantityError(f"{text} is not a finite quantity", text)
        return _tidy(_check_range(text, str(text)))
    if not isinstance(text, str):
        raise QuantityError(f"{text!r} is not a quantity (expected text {_EXAMPLES})", text)
    return _parse_text(text)


# Every reconcile reads the same few texts again ("10", "2Gi", "500m"): parse each once. Pure, so a
# cache is safe; errors are not cached and raise every time.
@lru_cache(maxsize=8192)
def _parse_text(text: str) -> Decimal:
    shown = _show(text)
    if text == "":
        raise QuantityError(f"an empty string is not a quantity (expected a number {_EXAMPLES})", text)
    if len(text) > _MAX_TEXT_LENGTH:
        raise QuantityError(f"quantity {_show(text[:20] + '...')} is too long to be a real quantity", text)
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{shown} is not a Kubernetes quantity (expected a number {_EXAMPLES})", text)

    number = Decimal(match["number"])
    with localcontext(CONTEXT):
        if match["binary"] is not None:
            value = number * KI ** _BINARY_SUFFIXES[match["binary"]]
        elif match["exponent"] is not None:
            exponent_digits = match["exponent"].lstrip("+-").lstrip("0")
            # Refuse before int() and scaleb(): a huge exponent is slow or raises deep in decimal.
            if len(exponent_digits) > 3:
                raise QuantityError(f"quantity {shown} is out of range", text)
            value = number.scaleb(int(match["exponent"]))
        else:
            value = number.scaleb(_DECIMAL_SUFFIXES[match["decimal"]])
    return _tidy(_check_range(value, shown))


def resource_kind(resource: str) -> ResourceKind:
    """How a quota resource is measured: cores, bytes, or plain counts."""
    if resource in _CPU_RESOURCES:
        return "cpu"
    # Per-storage-class quotas look like "<class>.storageclass.storage.k8s.io/requests.storage".
    if (
        resource in _BYTE_RESOURCES
        or resource.endswith("/requests.storage")
        or resource.endswith("ephemeral-storage")
        or resource.removeprefix("requests.").removeprefix("limits.").startswith("hugepages-")
    ):
        return "memory"
    return "count"


def _require_finite(value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise QuantityError(f"{value!r} is not a finite Decimal quantity", value)


def _page_size(resource: str) -> Decimal | None:
    """The page size of a hugepages quota (hugepages-2Mi, requests.hugepages-1Gi), else None."""
    size = resource.removeprefix("requests.").removeprefix("hugepages-")
    if size == resource.removeprefix("requests.") or size[-2:] not in _BINARY_SUFFIXES:
        return None
    try:
        return _parse_text(size)
    except QuantityError:
        return None


def round_up(value: Decimal, resource: str) -> Decimal:
    """Round up to the unit a person would set: whole millicores, whole Mi, whole pages of a hugepages
    quota, or whole items (objects, and extended resources: a GPU comes whole)."""
    _require_finite(value)
    kind = resource_kind(resource)
    page = _page_size(resource) if kind == "memory" else None
    with localcontext(CONTEXT):
        if kind == "cpu":
            rounded = (value / _MILLI).to_integral_value(rounding=ROUND_CEILING) * _MILLI
        elif page is not None and page > 0:
            rounded = (value / page).to_integral_value(rounding=ROUND_CEILING) * page
        elif kind == "memory":
            rounded = (value / MI).to_integral_value(rounding=ROUND_CEILING) * MI
        else:
            rounded = value.to_integral_value(rounding=ROUND_CEILING)
    return _tidy(rounded)


def _is_multiple(value: Decimal, unit: Decimal) -> bool:
    with localcontext(CONTEXT):
        return value % unit == 0


def format_quantity(value: Decimal, resource: str) -> str:
    """Render a value the way a person would write it; the text parses back to exactly `value`."""
    _require_finite(value)
    return _format(value, resource)


# Keyed by the Decimal itself, whose equal values ("1" and "1.0") render alike: the text depends on
# the value, never on how it was spelled.
@lru_cache(maxsize=8192)
def _format(value: Decimal, resource: str) -> str:
    kind = resource_kind(resource)
    with localcontext(CONTEXT):
        if kind == "cpu":
            if _is_multiple(value, Decimal(1)):
                return canonical(value)
            if _is_multiple(value, _MILLI):
                return f"{canonical(value / _MILLI)}m"
            if _is_multiple(value, _NANO):
                return f"{canonical(value / _NANO)}n"
            return canonical(value)
        if kind == "memory" and value != 0:
            for unit, suffix in ((GI, "Gi"), (MI, "Mi"), (KI, "Ki")):
                if _is_multiple(value, unit):
                    return f"{canonical(value / unit)}{suffix}"
    return canonical(value)


def _in_unit(value: Decimal, unit: Decimal, suffix: str) -> str:
    """`value` in `unit`: exact when that takes at most three decimals, else "~" and one decimal."""
    with localcontext(CONTEXT):
        amount = value / unit
        if amount == amount.quantize(_MILLI):
            return f"{canonical(amount)}{suffix}"
        return f"~{canonical(amount.quantize(_PERCENT_STEP, rounding=ROUND_HALF_UP))}{suffix}"


def _common_unit(values: list[Decimal], kind: ResourceKind) -> tuple[Decimal, str]:
    nonzero = [v for v in values if v != 0]
    if kind == "cpu":
        if all(_is_multiple(v, Decimal(1)) for v in nonzero):
            return Decimal(1), ""
        return (_MILLI, "m") if all(_is_multiple(v, _MILLI) for v in nonzero) else (Decimal(1), "")
    for unit, suffix in ((GI, "Gi"), (MI, "Mi"), (KI, "Ki")):
        if nonzero and all(_is_multiple(v, unit) for v in nonzero):
            return unit, suffix
    # Raw byte counts (a peak from Prometheus): one readable unit for all, inexact ones marked "~".
    largest = max(nonzero, default=Decimal(0))
    if largest >= GI:
        return MI, "Mi"
    return (KI, "Ki") if largest >= KI else (Decimal(1), "")


def format_together(values: list[Decimal | None], resource: str) -> list[str]:
    """Values that a person reads side by side ("4000m of 4800m", "1536Mi of 2048Mi"), in one unit.

    Cpu is in cores when every value is whole, else in millicores; memory in the largest binary
    unit that keeps every value exact. A byte count no binary unit holds exactly is shown rounded
    to 0.1 with "~" (the exact value stays in status and in -o json). None is shown as "-".
    """
    present = [v for v in values if v is not None]
    for value in present:
        _require_finite(value)
    kind = resource_kind(resource)
    if kind == "count":
        return ["-" if v is None else canonical(v) for v in values]
    unit, suffix = _common_unit(present, kind)
    return ["-" if v is None else "0" if v == 0 else _in_unit(v, unit, suffix) for v in values]


def format_at_a_glance(values: list[Decimal | None], resource: str) -> list[str]:
    """Values read side by side in a review, in the unit of the largest: cpu in cores ("40", "6.4"),
    memory in Gi, Mi or Ki ("16Gi", "~10.8Gi"), counts as they are.

    Exact wherever three decimals hold the value; else rounded to 0.1 and marked "~" (the exact value
    is in the JSON output). None is shown as "-".
    """
    present = [v for v in values if v is not None]
    for value in present:
        _require_finite(value)
    kind = resource_kind(resource)
    if kind != "memory":
        unit, suffix = Decimal(1), ""
    else:
        largest = max((abs(v) for v in present), default=Decimal(0))
        unit, suffix = next(((u, s) for u, s in ((GI, "Gi"), (MI, "Mi"), (KI, "Ki")) if largest >= u), (Decimal(1), ""))
    return ["-" if v is None else "0" if v == 0 else _in_unit(v, unit, suffix) for v in values]


def format_percent(percent: Decimal | None) -> str:
    """A utilization for people: "83.3%", "80%", "unknown"; at most one decimal, however it was stored."""
    if percent is None:
        return "unknown"
    _require_finite(percent)
    with localcontext(CONTEXT):
        return f"{canonical(percent.quantize(_PERCENT_STEP, rounding=ROUND_HALF_UP))}%"


def canonical(value: Decimal) -> str:
    """A resource-independent text form for hashing: "1000m" and "1" both give "1"."""
    _require_finite(value)
    if value == 0:
        # Avoids "-0" and "0.000", which would hash differently from "0".
        return "0"
    with localcontext(CONTEXT):
        return format(value.normalize(), "f")


_PERCENT_STEP = Decimal("0.1")


def utilization_percent(used: Decimal | int, hard: Decimal | int) -> Decimal | None:
    """How full a quota is: used as a percentage of hard, to 0.1 % (half up); None without a positive limit.

    The one figure that status, metrics and alerts show and compare against thresholds, so that
    "80 %" in one place is 80 % in all of them (7.996 of 10 is 80 %, and an 80 % alert fires).
    """
    for value in (used, hard):
        # Floats would bring binary rounding back in; bools are not amounts.
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise TypeError(f"{value!r} is not an exact amount (Decimal or int)")
    used_d, hard_d = Decimal(used), Decimal(hard)
    if not used_d.is_finite():
        raise ValueError(f"{used!r} is not a finite amount")
    if not hard_d.is_finite() or hard_d <= 0:
        return None
    with localcontext(CONTEXT):
        percent = (used_d * 100 / hard_d).quantize(_PERCENT_STEP, rounding=ROUND_HALF_UP).normalize()
    # normalize() writes 100 as "1E+2": undo that, so status and messages read naturally.
    exponent = percent.as_tuple().exponent
    return percent.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else percent
