"""Importers for other tools' routing traces, by format name.

Each importer is one module with NAME, SUMMARY, OPTIONS (option -> help), `sniff(path) -> bool`
(a cheap look that never raises) and `load(path, options) -> Trace`. Modules are imported on first
use so `moesim --help` stays fast. `moesim.traces.format.io.load_trace` is the entry point users call.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

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
