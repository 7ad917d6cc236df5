"""moesim.units: every parser path, checked against values written out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.units import (
    KINDS,
    format_bytes,
    format_quantity,
    format_seconds,
    parse_quantity,
    parse_quantity_full,
    parse_size_or_fraction,
)

VALID = [
    # bytes: decimal and binary prefixes, bytes and bits
    ("80 GiB", "bytes", 80 * 2**30),
    ("80GB", "bytes", 80e9),
    ("1 KiB", "bytes", 1024),
    ("1 kB", "bytes", 1000),
    ("1 KB", "bytes", 1000),
    ("3 MiB", "bytes", 3 * 2**20),
    ("2 TiB", "bytes", 2 * 2**40),
    ("1 PiB", "bytes", 2**50),
    ("1 PB", "bytes", 1e15),
    ("8 b", "bytes", 1.0),
    ("1 Gb", "bytes", 1e9 / 8),
    ("1 Mib", "bytes", 2**20 / 8),
    ("16 bits", "bytes", 2.0),
    ("1 bit", "bytes", 0.125),
    ("3 bytes", "bytes", 3.0),
    ("1 byte", "bytes", 1.0),
    ("7 B", "bytes", 7.0),
    # bandwidth: "/s" and "ps" spellings
    ("53 GB/s", "bandwidth", 53e9),
    ("25 GiB/s", "bandwidth", 25 * 2**30),
    ("10 Gbps", "bandwidth", 1.25e9),
    ("10 Gb/s", "bandwidth", 1.25e9),
    ("100 MBps", "bandwidth", 1e8),
    ("8 bps", "bandwidth", 1.0),
    ("1 B/s", "bandwidth", 1.0),
    ("3.35 TB/s", "bandwidth", 3.35e12),
    # time: SI, micro sign and Greek mu, words, minutes, hours
    ("7 us", "time", 7e-6),
    ("7 \u00b5s", "time", 7e-6),
    ("7 \u03bcs", "time", 7e-6),
    ("5 ms", "time", 5e-3),
    ("10 ns", "time", 1e-8),
    ("1 ps", "time", 1e-12),
    ("2 s", "time", 2.0),
    ("1 sec", "time", 1.0),
    ("1 second", "time", 1.0),
    ("3 seconds", "time", 3.0),
    ("2 min", "time", 120.0),
    ("1 h", "time", 3600.0),
    # flops
    ("989 TFLOP/s", "flops", 989e12),
    ("1 PFLOPS", "flops", 1e15),
    ("2 Gflop/s", "flops", 2e9),
    ("5 FLOP/s", "flops", 5.0),
    # power, energy
    ("700 W", "power", 700.0),
    ("0.5 kW", "power", 500.0),
    ("500 mW", "power", 0.5),
    ("10 J", "energy", 10.0),
    ("3 kJ", "energy", 3000.0),
    ("5 mJ", "energy", 5e-3),
    # energy per byte: per byte, per bit (x8), per larger unit
    ("10 pJ/B", "energy_per_byte", 1e-11),
    ("1 pJ/bit", "energy_per_byte", 8e-12),
    ("1 nJ/byte", "energy_per_byte", 1e-9),
    ("1 J/GB", "energy_per_byte", 1e-9),
    ("2 J/KiB", "energy_per_byte", 2 / 1024),
    # frequency
    ("1.98 GHz", "frequency", 1.98e9),
    ("100 MHz", "frequency", 1e8),
    ("1 kHz", "frequency", 1e3),
    ("50 Hz", "frequency", 50.0),
    # number forms and spacing
    ("  53 GB / s  ", "bandwidth", 53e9),
    ("1.5e3 MB", "bytes", 1.5e9),
    ("2E-3 s", "time", 2e-3),
    (".5 GB", "bytes", 5e8),
    ("5. GB", "bytes", 5e9),
    ("+4 GB", "bytes", 4e9),
]


@pytest.mark.parametrize("text,kind,expected", VALID)
def test_parses_to_si_base_units(text: str, kind: str, expected: float) -> None:
    assert parse_quantity(text, kind) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("text,kind,literal", [("5 us", "time", 5e-6), ("7 us", "time", 7e-6), ("0.1 ms", "time", 1e-4), ("3.35 TB/s", "bandwidth", 3.35e12), ("10 pJ/B", "energy_per_byte", 1e-11)])
def test_decimal_prefixes_give_exactly_the_float_literal(text: str, kind: str, literal: float) -> None:
    # 5.0 * 1e-06 is 4.9999999999999996e-06; a user writing "5 us" means the float 5e-06.
    assert parse_quantity(text, kind) == literal


def test_full_parse_keeps_kind_and_text() -> None:
    q = parse_quantity_full("  53 GB/s ", "bandwidth")
    assert (q.value, q.kind, q.text) == (53e9, "bandwidth", "53 GB/s")


ERRORS = [
    (25, "bandwidth", "bare number"),
    (25.0, "bandwidth", "bare number"),
    ("25", "bandwidth", "bare number"),
    ("  25  ", "bytes", "bare number"),
    (True, "bytes", "expected a bytes"),
    (None, "time", "expected a time"),
    (["5 GB"], "bytes", "expected a bytes"),
    ({"value": "5 GB"}, "bytes", "expected a bytes"),
    ("GB", "bytes", "cannot read"),
    ("", "bytes", "cannot read"),
    ("abc GB", "bytes", "cannot read"),
    ("nan GB", "bytes", "cannot read"),
    ("5 GB/s", "bytes", "not a bytes unit"),
    ("5 GB", "bandwidth", "not a bandwidth unit"),
    ("5 parsecs", "time", "not a time unit"),
    ("5 TFLOPs", "flops", "not a flops unit"),
    ("5 xB", "bytes", "not a bytes unit"),
    ("5 pJ", "energy_per_byte", "not a energy_per_byte unit"),
    ("5 W/B", "energy_per_byte", "not a energy_per_byte unit"),
    ("5 GB extra", "bytes", "not a bytes unit"),
    ("-5 GB", "bytes", "negative"),
    ("1e999 GB", "bytes", "not a finite"),
    ("1e99999999999 GB", "bytes", "not a finite"),
]


@pytest.mark.parametrize("value,kind,fragment", ERRORS)
def test_bad_input_is_a_user_error_naming_the_field(value: object, kind: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        parse_quantity(value, kind, where="prof.yaml: links.h2d.bandwidth")
    assert fragment in str(info.value)
    assert str(info.value).startswith("prof.yaml: links.h2d.bandwidth: ")


def test_negative_allowed_when_asked() -> None:
    assert parse_quantity("-5 s", "time", allow_negative=True) == -5.0


def test_tiny_exponent_underflows_to_zero() -> None:
    assert parse_quantity("1e-99999999999 GB", "bytes") == 0.0


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_quantity("5 GB", "volume")


@pytest.mark.parametrize(
    "text,total,expected",
    [("5%", 1000.0, 50.0), (" 12.5 % ", 80.0, 10.0), ("0%", 9.0, 0.0), ("0.6 GiB", 0.0, 0.6 * 2**30), ("4000MiB", 1.0, 4000 * 2**20)],
)
def test_size_or_fraction(text: str, total: float, expected: float) -> None:
    assert parse_size_or_fraction(text, total) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("value", ["abc%", "%", "-5%", "nan%", "inf%", "5", 5, 5.0, None, "5 GB/s"])
def test_size_or_fraction_errors(value: object) -> None:
    with pytest.raises(UserError) as info:
        parse_size_or_fraction(value, 100.0, where="--capacity")  # type: ignore[arg-type]
    assert str(info.value).startswith("--capacity: ")


@pytest.mark.parametrize(
    "n,text",
    [(12884901888, "12.00 GiB"), (512, "512 B"), (1536, "1.50 KiB"), (5 * 2**20, "5.00 MiB"), (2**40, "1.00 TiB"), (0, "0 B")],
)
def test_format_bytes(n: float, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize("t,text", [(2.5, "2.500 s"), (1.0, "1.000 s"), (0.0025, "2.500 ms"), (1e-3, "1.000 ms"), (2.5e-6, "2.5 us")])
def test_format_seconds(t: float, text: str) -> None:
    assert format_seconds(t) == text


@pytest.mark.parametrize(
    "value,kind,text",
    [
        (53e9, "bandwidth", "53 GB/s"),
        (80 * 2**30, "bytes", "80 GiB"),
        (81559 * 2**20, "bytes", "81559 MiB"),
        (5e-6, "time", "5 us"),
        (0.0, "time", "0 s"),
        (989e12, "flops", "989 TFLOP/s"),
        (0.5, "power", "500 mW"),
        (8e-11, "energy_per_byte", "80 pJ/B"),
        (1.98e9, "frequency", "1.98 GHz"),
    ],
)
def test_format_quantity_is_short_and_readable(value: float, kind: str, text: str) -> None:
    assert format_quantity(value, kind) == text


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(min_value=0, max_value=1e30, allow_nan=False, allow_infinity=False),
    kind=st.sampled_from([k for k in KINDS if k != "energy"] + ["energy"]),
)
def test_format_quantity_round_trips_exactly(value: float, kind: str) -> None:
    assert parse_quantity_full(format_quantity(value, kind), kind, check=False).value == value  # ranges: test_range_checks


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=30),
        st.from_regex(r"[+-]?\d{0,4}(\.\d{0,3})?([eE][+-]?\d{1,4})?\s?[kKMGTPmunpµμ]?i?(B|b|bit|bytes|W|J|Hz|s|FLOP/s|B/s|bps|J/B|pJ/bit)?", fullmatch=True),
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    ),
    kind=st.sampled_from(KINDS),
)
def test_any_input_gives_a_value_or_a_user_error(value: object, kind: str) -> None:
    try:
        result = parse_quantity(value, kind, where="fuzz")
    except UserError:
        return
    assert math.isfinite(result) and result >= 0
