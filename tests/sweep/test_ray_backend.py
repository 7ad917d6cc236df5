"""The Ray backend gives the local backend's table, and ships each trace once (ray.put)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray backend needs the dist extra (pip install 'moesim[dist]')")

from moesim.sweeps import store  # noqa: E402
from moesim.sweeps.runner import run_sweep  # noqa: E402
from moesim.sweeps.spec import parse_spec  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = {
    "imports": ["toy_policies"],
    "traces": {"a": {"factory": "toy_plugin:zipf_trace", "args": {"seed": 3, "passes": 12}},
               "b": {"factory": "toy_plugin:zipf_trace", "args": {"seed": 4, "passes": 12, "zipf": 0.7}}},
    "eviction": ["lru", "toy-fifo", "toy-fail"],
    "capacities": ["10%", "30%", "100%"],
    "scope": ["global", "layer"],
}


@pytest.fixture(scope="module")
def ray_instance():
    # Ray's workers inherit the driver's environment, not its sys.path: let them find toy_plugin
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(HERE), old) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_ray_table_is_identical_to_local(ray_instance, tmp_path, monkeypatch):
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw))
    spec = parse_spec(SPEC, "ray-test")
    local = run_sweep(spec, tmp_path / "local", backend="local", jobs=1, progress=False)
    remote = run_sweep(spec, tmp_path / "ray", backend="ray", jobs=2, progress=False)
    assert remote.ran == local.ran == 36 and remote.failed == local.failed > 0
    assert puts == ["Trace", "Trace"]  # each trace once into the object store, not once per task
    assert (tmp_path / "ray" / store.TABLE).read_bytes() == (tmp_path / "local" / store.TABLE).read_bytes()
    for path in store.run_files(tmp_path / "local"):
        assert (tmp_path / "ray" / "runs" / path.name).read_bytes() == path.read_bytes()
