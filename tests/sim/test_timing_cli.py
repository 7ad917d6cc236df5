"""The CLI glue: arguments, one timed run from an argparse Namespace, the compare table."""

from __future__ import annotations

import argparse
import json

import pytest

from moesim.errors import UserError
from moesim.sim import cli_timing

from timing_helpers import MB, hand_profile as _profile, hand_trace as _trace


@pytest.fixture
def hand_profile(monkeypatch):
    loaded = []

    def fake(name, overrides=()):
        loaded.append((name, tuple(overrides)))
        return _profile()

    monkeypatch.setattr(cli_timing, "resolve_profile", fake)
    return loaded


def _args(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="lru")
    parser.add_argument("--out", default=None)
    cli_timing.add_timing_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_timed_from_a_namespace(hand_profile, tmp_path):
    out = tmp_path / "timed.parquet"
    args = _args("--profile", "hand", "--set", "links.h2d.bandwidth=1 GB/s", "--prefetch", "oracle:lookahead=1:cross_pass=true",
                 "--out", str(out))
    summary = cli_timing.run_timed(args, _trace(), 3 * MB)
    assert hand_profile == [("hand", ("links.h2d.bandwidth=1 GB/s",))]
    # the hand timeline of test_timing_hand.test_oracle_prefetch_one_cell_ahead_matches_the_hand_timeline
    assert summary["time"]["total_s"] == pytest.approx(7098e-6, abs=1e-12)
    assert summary["config"]["profile_overrides"] == ["links.h2d.bandwidth=1 GB/s"]
    assert summary["label"] == "lru pf=oracle:cross_pass=True"
    json.dumps(summary, allow_nan=False)  # JSON-ready
    assert out.exists()


def test_run_timed_needs_a_profile_and_one_policy(hand_profile):
    with pytest.raises(UserError, match="profile"):
        cli_timing.run_timed(_args(), _trace(), 3 * MB)
    with pytest.raises(UserError, match="one eviction policy"):
        cli_timing.run_timed(_args("--profile", "x", "--policy", "lru,belady"), _trace(), 3 * MB)
    with pytest.raises(UserError, match="prefetch"):
        cli_timing.run_timed(_args("--profile", "x", "--prefetch", "psychic"), _trace(), 3 * MB)


def test_unknown_profile_source_is_a_user_error():
    try:
        import moesim.hw_profiles.loader  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(UserError, match="not installed"):
            cli_timing.resolve_profile("h100-sxm")
    else:
        with pytest.raises(UserError):
            cli_timing.resolve_profile("no-such-profile-anywhere")


def test_timed_table_ranks_by_tpot_and_adds_bounds(hand_profile):
    summaries = [cli_timing.run_timed(_args("--profile", "hand", "--prefetch", pf), _trace(), 3 * MB, eviction=ev)
                 for ev, pf in [("lru", "none"), ("lru", "oracle:lookahead=1:cross_pass=true"), ("belady", "none")]]
    table = cli_timing.timed_table(summaries)
    runs = table[table["rank_tpot"].notna()]
    assert runs["tpot_s"].tolist() == sorted(runs["tpot_s"].tolist())
    assert runs["rank_tpot"].tolist() == [1, 2, 3]
    bounds = table[table["label"].str.startswith("bound")]
    assert bounds["label"].tolist() == ["bound: Belady", "bound: time"]
    assert bounds.iloc[0]["misses"] == summaries[0]["bounds"]["belady_misses"]
    assert (runs["tpot_s"] >= bounds.iloc[1]["tpot_s"]).all()


def test_overlap_io_lanes_and_storage_reads_options(hand_profile):
    """The run options reach TimedConfig and the result records them; a bad value is a one-line error."""
    args = _args("--profile", "hand", "--overlap", "expert", "--io-lanes", "3", "--storage-reads", "buffered")
    summary = cli_timing.run_timed(args, _trace(), 8 * MB)
    assert summary["config"]["overlap"] == "expert"
    assert summary["config"]["io_lanes"] == 3 and summary["config"]["storage_reads"] == "buffered"
    with pytest.raises(UserError, match="--io-lanes"):
        cli_timing.run_timed(_args("--profile", "hand", "--io-lanes", "0"), _trace(), 8 * MB)
    with pytest.raises(SystemExit):
        _args("--profile", "hand", "--overlap", "token")
