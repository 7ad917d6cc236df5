"""Capacities as users write them: shares of routed bytes, sizes with units, slots, lists."""

from __future__ import annotations

import pytest

from moesim.errors import UserError
from moesim.sim.capacity import layer_capacities, parse_capacity, parse_capacity_list
from moesim.traces.format.build import simple_trace


@pytest.fixture
def trace():
    # 2 layers x 4 experts, 10 and 30 bytes per expert: 4 * 10 + 4 * 30 = 160 routed bytes
    return simple_trace([[[0], [1]]], n_layers=2, n_experts=4, object_bytes=[10, 30])


def test_percent_is_a_share_of_all_routed_expert_bytes(trace):
    assert parse_capacity("25%", trace).bytes == 40
    assert parse_capacity("12.5 %", trace).bytes == 20
    assert parse_capacity("1%", trace).bytes == 1  # 1.6 rounds down


def test_units_are_binary_or_decimal_as_written(trace):
    assert parse_capacity("4000MiB", trace).bytes == 4000 * 2**20
    assert parse_capacity("4 GB", trace).bytes == 4 * 10**9
    assert parse_capacity("0.5 KiB", trace).bytes == 512


def test_slots_are_objects_of_the_largest_size(trace):
    assert parse_capacity("51slots", trace).bytes == 51 * 30
    assert parse_capacity("1 slot", trace).bytes == 30


def test_a_list_keeps_its_order_and_text(trace):
    caps = parse_capacity_list("1%,5%, 4000MiB,2slots", trace)
    assert [c.text for c in caps] == ["1%", "5%", "4000MiB", "2slots"]
    assert [c.bytes for c in caps] == [1, 8, 4000 * 2**20, 60]


@pytest.mark.parametrize("text", ["4000", "4000 parsecs", "-5%", "abc%", "", ",", "2.5slots"])
def test_bad_capacities_are_user_errors_naming_the_option(trace, text):
    with pytest.raises(UserError, match="--capacity"):
        parse_capacity_list(text, trace)


def test_layer_weights_split_in_proportion_and_reject_bad_tables():
    assert layer_capacities(100, [1, 3], 2) == (25, 75)
    assert layer_capacities(100, None, 2) is None
    with pytest.raises(UserError, match="3 weights for 2 layers"):
        layer_capacities(100, [1, 1, 1], 2)
    with pytest.raises(UserError, match="positive sum"):
        layer_capacities(100, [0, 0], 2)
