"""Importers for other tools' routing traces, by format name.

Each importer is one module with NAME, SUMMARY, OPTIONS (option -> help), `sniff(path) -> bool`
(a cheap look that never raises), `load(path, options) -> Trace` and `examples() -> list[Example]`
(small valid inputs: the fuzz tests, tests/traces/traceio/test_fuzz_importers.py, load them and
mutated copies of them for every registered importer, with no list to edit). Modules are imported
on first use so `moesim --help` stays fast. `moesim.traces.format.io.load_trace` is the entry point users call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# Sniffed in this order: specific layouts before the generic CSV/JSONL reader.
IMPORTER_MODULES: dict[str, str] = {
    "bigmoeonedge": "moesim.traces.importers.bigmoeonedge",
    "stratamoe": "moesim.traces.importers.stratamoe",
    "flame": "moesim.traces.importers.flame",
    "vllm": "moesim.traces.importers.vllm",
    "moe-infinity": "moesim.traces.importers.moe_infinity",
    "megatron": "moesim.traces.importers.megatron",
    "moecap": "moesim.traces.importers.moecap",
    "activation-csv": "moesim.traces.importers.activation_csv",
    "generic": "moesim.traces.importers.generic",
}


def importer(name: str) -> ModuleType:
    return importlib.import_module(IMPORTER_MODULES[name])


def importer_names() -> list[str]:
    return list(IMPORTER_MODULES)


def sniff_importer(path: Path) -> str | None:
    """The first importer that recognises `path`, or None."""
    for name in IMPORTER_MODULES:
        if importer(name).sniff(path):
            return name
    return None


@dataclass(frozen=True)
class Example:
    """A small valid input of an importer.

    `files` maps paths inside a fresh folder to their bytes; `load` is the path handed to the importer
    ("" = the folder itself, for folder layouts); `options` are the importer options it needs. The fuzz
    tests mutate the bytes of `mutated` (by default the file loaded, else the last file).
    """

    label: str
    files: dict[str, bytes]
    load: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def file(cls, label: str, name: str, content: bytes | str, **options: Any) -> "Example":
        data = content.encode() if isinstance(content, str) else content
        return cls(label, {name: data}, name, options)

    @property
    def mutated(self) -> str:
        return self.load or sorted(self.files)[-1]
