"""Rewrite tests/golden/expected/ from the current code: `PYTHONPATH=$PWD python -m tests.golden.regen`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.golden.cases import EXPECTED, run_all


def main() -> None:
    EXPECTED.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        outputs = run_all(Path(scratch))
    for old in EXPECTED.glob("*.txt"):
        if old.stem not in outputs:
            old.unlink()
    for name, text in outputs.items():
        (EXPECTED / f"{name}.txt").write_text(text)
        print(f"wrote {EXPECTED / f'{name}.txt'}")


if __name__ == "__main__":
    main()
