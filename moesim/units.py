"""Quantities with units, checked by machine: "53 GB/s", "80 GiB", "7 us", "989 TFLOP/s".

Every dimensioned value in a profile or on the command line carries its unit, because a bare
"25" has cost people a factor of 1024 or 8 (GB vs GiB, GB vs Gb) before. Decimal prefixes are
powers of 10, binary ones (Ki, Mi, Gi, Ti) powers of 2; "b" is a bit, "B" a byte.
Values are returned in SI base units: bytes, bytes/s, seconds, FLOP/s, watts, joules, J/byte, Hz.

This is also the one place numbers from users are range-checked (README "Safety"): a size past
MAX_BYTES, a positive bandwidth or FLOP rate below 1 per second, a count or seed outside its
range is a UserError, and an error message echoes at most SHOW_CHARS characters of what was typed.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass

from moesim.errors import UserError

DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "n": 1e-9, "p": 1e-12}

KINDS = ("bytes", "bandwidth", "time", "flops", "power", "energy", "energy_per_byte", "frequency")

# Ranges of what a user may write: far beyond any real machine, well inside int64 and float64.
MAX_BYTES = 2.0**60  # 1 EiB
MAX_QUANTITY = 1e24
MIN_RATE = 1.0  # a positive bandwidth or FLOP/s below 1 per second is a typo (1e-300 B/s overflows times)
RATE_KINDS = ("bandwidth", "flops")
MAX_SEED = 2**64 - 1
SHOW_CHARS = 40


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """repr(value) cut to `limit` characters: a 5,000-digit value is not echoed whole."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def check_seed(value: object, where: str) -> int:
    """A seed: an integer in 0..2**64-1 (numpy's generators take no more, and no negative ones)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"a seed is an integer, got {show(value)}", where)
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"seed {show(value)} outside 0..2**64-1", where)
    return int(value)


def parse_count(text: object, where: str, minimum: int = 0, maximum: int = 2**62) -> int:
    """A whole number a user typed ("500", "10M", "2e6", 12) within minimum..maximum."""
    if isinstance(text, bool):
        raise UserError(f"expected a whole number, got {show(text)}", where)
    if isinstance(text, int):
        value = text
    elif isinstance(text, float) and math.isfinite(text) and text == int(text):
        value = int(text)
    elif isinstance(text, str):
        stripped = text.strip()
        match = re.fullmatch(rf"{_NUMBER}\s*(?P<suffix>[kKMGT]?)", stripped) if len(stripped) <= 64 else None
        if match is None:
            raise UserError(f"cannot read {show(text)} as a count (a whole number such as 500, 10M, 2e6)", where)
        number = _DECIMAL_CONTEXT.multiply(decimal.Decimal(match.group("num")),
                                           decimal.Decimal(repr(DECIMAL[match.group("suffix")])))
        if not number.is_finite() or number != number.to_integral_value():
            raise UserError(f"{show(text)} is not a whole number", where)
        if abs(number) > maximum + 1 or abs(number) > 2**63:
            raise UserError(f"{show(text)} outside {minimum:,}..{maximum:,}", where)
        value = int(number)
    else:
        raise UserError(f"expected a whole number, got {show(text)}", where)
    if not minimum <= value <= maximum:
        raise UserError(f"{show(text)} outside {minimum:,}..{maximum:,}", where)
    return value


_NUMBER = r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_PATTERN = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>\S.*?)?\s*$")


@dataclass(frozen=True)
class Quantity:
    """A parsed value in SI base units, with the kind and the text it came from."""

    value: float
    kind: str
    text: str


def _byte_scale(unit: str) -> float | None:
    """Scale of a size unit to bytes ("GiB" -> 2**30, "Gb" -> 1e9/8), or None if not a size."""
    for prefix, scale in BINARY.items():
        if unit == prefix + "B":
            return scale
        if unit == prefix + "b":
            return scale / 8
    for prefix, scale in DECIMAL.items():
        if unit == prefix + "B":
            return scale
        if unit == prefix + "b":
            return scale / 8
    if unit in ("byte", "bytes"):
        return 1.0
    if unit in ("bit", "bits"):
        return 1 / 8
    return None


def _time_scale(unit: str) -> float | None:
    if unit in ("s", "sec", "second", "seconds"):
        return 1.0
    if unit in ("min",):
        return 60.0
    if unit in ("h",):
        return 3600.0
    if unit.endswith("s") and unit[:-1] in SMALL and unit[:-1]:
        return SMALL[unit[:-1]]
    return None


def _scale(unit: str, kind: str) -> float | None:
    """Scale factor of `unit` for a quantity of `kind`, or None when the unit does not fit the kind."""
    if kind == "bytes":
        return _byte_scale(unit)
    if kind == "bandwidth":
        for sep in ("/s", "ps"):
            if unit.endswith(sep):
                size = _byte_scale(unit[: -len(sep)])
                if size is not None:
                    return size
        return None
    if kind == "time":
        return _time_scale(unit)
    if kind == "flops":
        for suffix in ("FLOP/s", "FLOPS", "flop/s"):
            if unit.endswith(suffix):
                prefix = unit[: -len(suffix)]
                if prefix in DECIMAL:
                    return DECIMAL[prefix]
        return None
    if kind == "power":
        return _prefixed(unit, "W")
    if kind == "energy":
        return _prefixed(unit, "J")
    if kind == "energy_per_byte":
        if "/" not in unit:
            return None
        num, den = unit.split("/", 1)
        j = _prefixed(num, "J")
        b = _byte_scale(den)
        if j is None or b is None:
            return None
        return j / b
    if kind == "frequency":
        return _prefixed(unit, "Hz")
    raise ValueError(f"unknown quantity kind {kind!r}")


def _prefixed(unit: str, base: str) -> float | None:
    if not unit.endswith(base):
        return None
    prefix = unit[: -len(base)]
    if prefix in SMALL:
        return SMALL[prefix]
    if prefix in DECIMAL:
        return DECIMAL[prefix]
    return None


EXAMPLES = {
    "bytes": "80 GiB",
    "bandwidth": "53 GB/s",
    "time": "7 us",
    "flops": "989 TFLOP/s",
    "power": "700 W",
    "energy": "10 J",
    "energy_per_byte": "10 pJ/B",
    "frequency": "1.98 GHz",
}


def parse_quantity(text: object, kind: str, where: str = "", allow_negative: bool = False) -> float:
    """Parse `text` as a quantity of `kind` and return it in SI base units.

    Raises UserError naming `where` for a bare number, an unknown or mismatched unit, a value that
    is not finite, or a negative value (unless `allow_negative`).
    """
    return parse_quantity_full(text, kind, where, allow_negative).value


def parse_quantity_full(text: object, kind: str, where: str = "", allow_negative: bool = False,
                        check: bool = True) -> Quantity:
    if kind not in KINDS:
        raise ValueError(f"unknown quantity kind {kind!r}")
    example = EXAMPLES[kind]
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"expected a {kind} with a unit such as '{example}', got {show(text)}", where or None)
    if isinstance(text, (int, float)):
        raise UserError(f"bare number {show(text)} has no unit; write it like '{example}'", where or None)
    match = _PATTERN.match(text) if len(text) <= 200 else None
    if not match:
        raise UserError(f"cannot read {show(text)} as a {kind}; write it like '{example}'", where or None)
    unit = match.group("unit")
    if not unit:
        raise UserError(f"bare number {show(text.strip())} has no unit; write it like '{example}'", where or None)
    scale = _scale(unit.replace(" ", ""), kind)
    if scale is None:
        raise UserError(f"unit {show(unit)} is not a {kind} unit; write it like '{example}'", where or None)
    value = _exact_product(match.group("num"), scale)
    if not math.isfinite(value):
        raise UserError(f"{show(text)} is not a finite {kind}", where or None)
    if value < 0 and not allow_negative:
        raise UserError(f"{show(text)} is negative", where or None)
    if check:
        check_range(value, kind, text, where)
    return Quantity(value=value, kind=kind, text=text.strip())


def check_range(value: float, kind: str, text: object, where: str = "") -> None:
    """UserError for a value of `kind` no machine has: past MAX_BYTES or MAX_QUANTITY, or a positive
    rate below MIN_RATE per second."""
    limit = MAX_BYTES if kind == "bytes" else MAX_QUANTITY
    if abs(value) > limit:
        raise UserError(f"{show(text)} is beyond the largest {kind} moesim accepts "
                        f"({'1 EiB' if kind == 'bytes' else f'{limit:g}'})", where or None)
    if kind in RATE_KINDS and 0 < abs(value) < MIN_RATE:
        raise UserError(f"{show(text)} is below 1 per second: not a real {kind}", where or None)


# Wide exponent range, no traps: an absurd exponent becomes inf or 0 and is reported as not finite.
_DECIMAL_CONTEXT = decimal.Context(prec=40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])


def _exact_product(number: str, scale: float) -> float:
    """number x scale rounded once, so "5 us" is exactly the float 5e-06 (5.0 * 1e-06 is not)."""
    product = _DECIMAL_CONTEXT.multiply(decimal.Decimal(number), decimal.Decimal(repr(scale)))
    return float(product)


def parse_size_or_fraction(text: object, total_bytes: float, where: str = "capacity") -> float:
    """Capacity as bytes: "4000MiB", "0.6 GiB", or a share of `total_bytes` such as "5%"."""
    if not isinstance(text, str):
        return parse_quantity(text, "bytes", where)  # raises the bare-number / wrong-type UserError
    stripped = text.strip()
    if stripped.endswith("%"):
        try:
            share = float(stripped[:-1])
        except ValueError:
            raise UserError(f"cannot read {show(text)} as a percentage", where) from None
        if not math.isfinite(share) or share < 0:
            raise UserError(f"{show(text)} must be a non-negative percentage", where)
        if share > 1e6:
            raise UserError(f"{show(text)} is more than a million percent", where)
        return total_bytes * share / 100.0
    return parse_quantity(stripped, "bytes", where)


def format_bytes(n: float) -> str:
    """Human-readable binary size, e.g. 12884901888 -> '12.00 GiB'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def format_seconds(t: float) -> str:
    if t >= 1:
        return f"{t:.3f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3f} ms"
    return f"{t * 1e6:.1f} us"


BASE_UNITS = {
    "bytes": "B",
    "bandwidth": "B/s",
    "time": "s",
    "flops": "FLOP/s",
    "power": "W",
    "energy": "J",
    "energy_per_byte": "J/B",
    "frequency": "Hz",
}

_FORMAT_PREFIXES = {
    "bytes": ("Ti", "T", "Gi", "G", "Mi", "M", "Ki", "k", ""),
    "bandwidth": ("Ti", "T", "Gi", "G", "Mi", "M", "Ki", "k", ""),
    "time": ("", "m", "u", "n"),
    "flops": ("P", "T", "G", "M", "k", ""),
    "power": ("k", "", "m"),
    "energy": ("k", "", "m"),
    "energy_per_byte": ("", "m", "u", "n", "p"),
    "frequency": ("G", "M", "k", ""),
}
_PREFIX_SCALE = {**SMALL, **DECIMAL, **BINARY}


def format_quantity(value: float, kind: str, digits: int | None = None) -> str:
    """`value` (SI base units) as text that parse_quantity reads back to exactly the same float.

    Of the prefixes that leave a mantissa >= 1, takes the shortest text that round-trips exactly
    ("53 GB/s", "80 GiB", "5 us"), so a profile written back to YAML stays readable; falls back to
    the base unit. With `digits`, for display instead: `digits` significant digits under the largest
    decimal prefix that leaves a mantissa >= 1 ("52.9 GB/s"), which need not round-trip (byte counts
    stay exact).
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot write a non-finite {kind}: {value}")
    base = BASE_UNITS[kind]
    if digits is not None and kind != "bytes":  # byte counts stay exact ("80 GiB")
        return _display_quantity(value, kind, base, digits)
    best: str | None = None
    for prefix in _FORMAT_PREFIXES[kind]:
        mantissa = value / _PREFIX_SCALE[prefix]
        if value != 0 and abs(mantissa) < 1:
            continue
        unit = f"{prefix}J/B" if base == "J/B" else prefix + base
        for digits in range(1, 18):
            text = f"{mantissa:.{digits}g} {unit}"
            if "e" not in text and parse_quantity_full(text, kind, allow_negative=True, check=False).value == value:
                if best is None or len(text) < len(best):
                    best = text
                break
    return best if best is not None else f"{value!r} {base}"


def _display_quantity(value: float, kind: str, base: str, digits: int) -> str:
    prefixes = [p for p in _FORMAT_PREFIXES[kind] if not p.endswith("i")]
    prefix = next((p for p in prefixes if abs(value) >= _PREFIX_SCALE[p]), prefixes[-1])
    unit = f"{prefix}J/B" if base == "J/B" else prefix + base
    text = f"{value / _PREFIX_SCALE[prefix]:.{digits}g}"
    if "e" in text:
        text = repr(float(text))
    return f"{text} {unit}"
