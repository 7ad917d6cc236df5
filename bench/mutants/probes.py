"""Curated mutation probes: named bugs planted one at a time in a copy of the repository.

Each probe in bench/mutants/probes.yaml names a file, an exact snippet of it, the snippet's
mutated form, the tests that must catch it and why it matters. For every probe the runner puts the
mutated file into a temporary copy (bench/mutants/repo_copy.py), runs only the named tests, and
requires at least one to fail; then it restores the file. A probe whose snippet is no longer in
its file fails loudly: the code moved and the probe must follow it, never pass silently.

    python -m bench.mutants.probes            # all probes; exit 1 if any survives or is stale
    python -m bench.mutants.probes -k ttft    # probes whose name contains "ttft"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.mutants.repo_copy import REPO, copy_env, make_copy, remove_copy

PROBES_FILE = Path(__file__).with_name("probes.yaml")
FIELDS = ("name", "file", "original", "mutated", "tests", "description")


@dataclass(frozen=True)
class Probe:
    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    description: str
    env: tuple[tuple[str, str], ...] = ()  # extra environment; "{tmp}" is a scratch folder beside the copy


@dataclass(frozen=True)
class Verdict:
    probe: str
    status: str  # "killed", "SURVIVED", "STALE" (snippet not found), "BAD" (probe itself broken)
    detail: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "killed"


def load_probes(path: Path = PROBES_FILE) -> list[Probe]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("probes"), list):
        raise SystemExit(f"{path}: expected a mapping with a 'probes' list")
    probes, seen = [], set()
    for i, raw in enumerate(doc["probes"]):
        missing = [f for f in FIELDS if f not in (raw or {})]
        if missing:
            raise SystemExit(f"{path}: probe #{i + 1}: missing {', '.join(missing)}")
        if raw["name"] in seen:
            raise SystemExit(f"{path}: probe {raw['name']}: name used twice")
        seen.add(raw["name"])
        tests = raw["tests"] if isinstance(raw["tests"], list) else [raw["tests"]]
        env = raw.get("env") or {}
        if not isinstance(env, dict):
            raise SystemExit(f"{path}: probe {raw['name']}: env must be a mapping")
        probes.append(Probe(str(raw["name"]), str(raw["file"]), str(raw["original"]), str(raw["mutated"]),
                            tuple(str(t) for t in tests), str(raw["description"]).strip(),
                            tuple((str(k), str(v)) for k, v in env.items())))
    return probes


def plant(probe: Probe, source: str) -> str:
    """The file's text with the probe's bug in it; raises LookupError when the snippet is gone."""
    count = source.count(probe.original)
    if count == 0:
        raise LookupError(f"probe {probe.name}: snippet not found in {probe.file} (code moved: update the probe)")
    if count > 1:
        raise LookupError(f"probe {probe.name}: snippet found {count} times in {probe.file} (make it unique)")
    return source.replace(probe.original, probe.mutated, 1)


def run_probe(probe: Probe, root: Path, python: str = sys.executable, timeout: float = 600.0) -> Verdict:
    """Plant `probe` in the copy at `root`, run its tests, restore the file."""
    start = time.perf_counter()
    target = root / probe.file
    if not target.is_file():
        return Verdict(probe.name, "STALE", f"probe {probe.name}: {probe.file} does not exist (code moved: update "
                       "the probe)", 0.0)
    original = target.read_text()
    try:
        mutated = plant(probe, original)
    except LookupError as exc:
        return Verdict(probe.name, "STALE", str(exc), 0.0)
    if mutated == original:
        return Verdict(probe.name, "BAD", f"probe {probe.name}: the mutation changes nothing", 0.0)
    if probe.file.endswith(".py"):
        try:
            compile(mutated, probe.file, "exec")
        except SyntaxError as exc:  # a syntax error is caught by everything and proves nothing
            return Verdict(probe.name, "BAD", f"probe {probe.name}: mutated file does not compile: {exc}", 0.0)
    missing = [t for t in probe.tests if not (root / t.split("::")[0]).exists()]
    if missing:
        return Verdict(probe.name, "STALE", f"probe {probe.name}: test file(s) {', '.join(missing)} not found "
                       "(tests moved: update the probe)", 0.0)
    target.write_text(mutated)
    try:
        cmd = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header", "-rN", *probe.tests]
        try:
            env = copy_env(root)
            env.update({k: v.replace("{tmp}", str(root.parent / "scratch")) for k, v in probe.env})
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Verdict(probe.name, "killed", f"tests timed out after {timeout:.0f} s", time.perf_counter() - start)
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - start
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode in (1, 2):  # 1: a test failed; 2: collection failed (the mutant broke an import)
        return Verdict(probe.name, "killed", last, seconds)
    if proc.returncode == 0:
        return Verdict(probe.name, "SURVIVED", last, seconds)
    return Verdict(probe.name, "BAD", f"pytest exit {proc.returncode}: {last}", seconds)


def run_all(probes: list[Probe], repo: Path = REPO, python: str = sys.executable) -> list[Verdict]:
    root = make_copy(repo, prefix="moesim-probes-")
    try:
        verdicts = []
        for probe in probes:
            verdict = run_probe(probe, root, python)
            print(f"{verdict.status:9s} {verdict.seconds:6.1f} s  {probe.name}: {verdict.detail}", flush=True)
            verdicts.append(verdict)
        return verdicts
    finally:
        remove_copy(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="select", default="", help="only probes whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    args = parser.parse_args(argv)
    probes = [p for p in load_probes() if args.select in p.name]
    if args.list:
        for p in probes:
            print(f"{p.name}: {p.file} -- {p.description.splitlines()[0]}")
        return 0
    if not probes:
        print(f"no probe matches {args.select!r}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    verdicts = run_all(probes)
    bad = [v for v in verdicts if not v.ok]
    print(f"{len(verdicts) - len(bad)}/{len(verdicts)} probes killed in {time.perf_counter() - start:.0f} s")
    for v in bad:
        print(f"FAILED probe {v.probe}: {v.status}: {v.detail}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
