"""Where the runs execute: in this process, in a local process pool, or on a Ray cluster.

Every backend takes the runs still to do plus the loaded traces and profiles, and yields one
RunOutput per run as it finishes (in any order); the caller writes them. Traces travel once per
worker process (local pool initializer) or once into Ray's object store (ray.put), never per run.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator, Sequence

from moesim.errors import UserError
from moesim.sweeps.execute import RunOutput, execute_run
from moesim.sweeps.plan import ProfileKey, profile_key
from moesim.sweeps.run_config import RunConfig
from moesim.traces.format.trace import Trace

BACKENDS = ("local", "ray")


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _import_all(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


# ---- local -------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def die_with_parent(parent_pid: int) -> None:
    """Make this worker process die when the sweep that started it dies, even by SIGKILL.

    Linux's PR_SET_PDEATHSIG delivers SIGKILL when the parent goes; if the parent is already gone
    (it died before this line ran) exit now. Elsewhere a thread polls for the parent instead.
    """
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="moesim-parent-watch", daemon=True).start()


def _init_worker(traces: dict[str, Trace], profiles: dict[ProfileKey, Any], imports: Sequence[str],
                 parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    _import_all(imports)
    _WORKER["traces"] = traces
    _WORKER["profiles"] = profiles


def _work(config: RunConfig) -> RunOutput:
    return execute_run(config, _WORKER["traces"][config.trace], _WORKER["profiles"].get(profile_key(config)))


def run_local(todo: Sequence[RunConfig], traces: dict[str, Trace], profiles: dict[ProfileKey, Any], jobs: int,
              imports: Sequence[str] = ()) -> Iterator[RunOutput]:
    """Run in this process (jobs 1) or in a pool of `jobs` fresh ("spawn") worker processes."""
    if jobs <= 1 or len(todo) <= 1:
        for config in todo:
            yield execute_run(config, traces[config.trace], profiles.get(profile_key(config)))
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context, initializer=_init_worker,
                               initargs=(traces, profiles, tuple(imports), os.getpid()))
    try:
        # a bounded window of submitted runs keeps the driver's memory flat for huge sweeps
        window = 4 * jobs
        pending: set[Any] = set()
        queue = iter(todo)
        for config in queue:
            pending.add(pool.submit(_work, config))
            if len(pending) >= window:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_work, nxt))
    except BrokenProcessPool:
        raise UserError("a worker process died (killed, or out of memory); finished runs are saved: run the "
                        "same command again to resume, with --jobs 1 to find the run", "sweep") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- ray ---------------------------------------------------------------------------------------
def _ray_execute(config: RunConfig, trace: Trace, profile: Any, imports: Sequence[str]) -> RunOutput:
    _import_all(imports)
    return execute_run(config, trace, profile)


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise UserError("the ray backend needs Ray: pip install 'moesim[dist]'", "--backend ray") from None
    return ray


def run_ray(todo: Sequence[RunConfig], traces: dict[str, Trace], profiles: dict[ProfileKey, Any], jobs: int,
            imports: Sequence[str] = (), address: str | None = None) -> Iterator[RunOutput]:
    """Run as Ray tasks. Uses the Ray instance this process is connected to, else connects to
    `address` ("auto" or HOST:PORT), else starts a local one with `jobs` CPUs (shut down after)."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, jobs), include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise UserError(f"cannot connect to a Ray cluster: {exc}", "--ray-address") from None
        started = True
    try:
        trace_refs = {name: ray.put(trace) for name, trace in traces.items()}
        profile_refs = {key: ray.put(p) for key, p in profiles.items()}
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_execute)
        window = max(64, 8 * jobs)
        queue = iter(todo)
        pending = []
        for config in queue:
            pending.append(task.remote(config, trace_refs[config.trace], profile_refs.get(profile_key(config)),
                                       tuple(imports)))
            if len(pending) >= window:
                break
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                output = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the task failed before its run started
                cause = getattr(exc, "cause", None) or exc
                raise UserError(f"a Ray worker failed outside any run ({type(cause).__name__}: {cause}); modules "
                                "named in the spec's imports must be importable on every node", "--backend ray") \
                    from None
            yield output
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(task.remote(nxt, trace_refs[nxt.trace], profile_refs.get(profile_key(nxt)),
                                           tuple(imports)))
    finally:
        if started:
            ray.shutdown()
