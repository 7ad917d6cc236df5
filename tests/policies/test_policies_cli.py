"""`moesim policies list|show` and the policy spec syntax, as a user meets them."""

from __future__ import annotations

import json

import pytest

from moesim.cli import main
from moesim.errors import UserError
from moesim.policies.registry import parse_spec

REQUIRED = {"lru", "fifo", "lfu", "random", "belady", "least-stale", "lru-ds", "moe-infinity", "static-hot", "arc",
            "slru"}


def test_list_names_every_required_eviction_policy(capsys):
    assert main(["policies", "list", "--kind", "eviction", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert REQUIRED <= {r["name"] for r in rows}
    assert all(r["kind"] == "eviction" for r in rows)
    offline = {r["name"] for r in rows if r["offline"]}
    assert {"belady", "belady-bypass"} <= offline and "lru" not in offline


def test_show_gives_parameters_with_defaults_and_help(capsys):
    assert main(["policies", "show", "lfu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (decay,) = data["params"]
    assert decay["name"] == "decay" and decay["default"] == 1.0 and decay["help"]
    assert "tie" in data["doc"].lower()
    assert main(["policies", "show", "lru-ds"]) == 0
    assert "protect (int, default 3)" in capsys.readouterr().out


def test_show_unknown_policy_is_a_one_line_user_error(capsys):
    assert main(["policies", "show", "no-such-policy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("moesim: error:") and "known:" in err and len(err.strip().splitlines()) == 1


def test_spec_syntax_sets_typed_parameters():
    spec = parse_spec("lfu:decay=0.9")
    assert spec.params.decay == 0.9 and spec.label() == "lfu:decay=0.9"
    assert parse_spec("lru-ds:protect=5").params.protect == 5
    assert parse_spec("belady:bypass=true").params.bypass is True
    assert parse_spec("belady-bypass").params.bypass is True
    assert parse_spec("static-hot:profile_passes=10:share=0.25").params.share == 0.25


@pytest.mark.parametrize("text, message", [
    ("lfu:decay=2", "decay must be in"),
    ("lfu:decay=abc", "expects float"),
    ("lfu:speed=1", "unknown parameter 'speed'"),
    ("lru:decay=1", "takes no parameters"),
    ("lru-ds:protect=-1", "protect must be"),
    ("slru:protected_share=1.5", "protected_share"),
    ("static-hot:share=2", "share must be"),
    ("belady-bypass:bypass=false", "fixed by this alias"),
    ("nope", "unknown eviction policy"),
])
def test_bad_specs_are_user_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_spec(text)
