"""Configuration of synthetic traces: SynthConfig, length distributions and presets.

Every knob is a frozen-dataclass field whose metadata carries its help text and a parser, so
the CLI's `--set key=value`, the fit's YAML and `--help` all come from this one definition.
The generator (moesim.traces.synth.synthetic) documents what each routing knob does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from moesim.errors import UserError
from moesim.units import MAX_BYTES, check_seed, parse_quantity

MiB = 1 << 20
_WHERE = "synth config"


# ---- length distributions ----------------------------------------------------------------------
@dataclass(frozen=True)
class LengthDist:
    """Tokens per request: fixed:N, uniform:LO:HI (inclusive), lognormal:MU:SIGMA (of ln tokens).

    Lognormal draws are rounded and clipped to [minimum, 10^7].
    """

    kind: str = "fixed"
    a: float = 1.0
    b: float = 0.0
    minimum: int = 0

    KINDS = ("fixed", "uniform", "lognormal")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise UserError(f"length distribution must be one of {', '.join(self.KINDS)}, got {self.kind!r}", _WHERE)
        if self.kind == "fixed" and (self.a < self.minimum or self.a != int(self.a)):
            raise UserError(f"fixed length must be an integer >= {self.minimum}, got {self.a}", _WHERE)
        if self.kind == "uniform" and not (self.minimum <= self.a <= self.b):
            raise UserError(f"uniform lengths need {self.minimum} <= LO <= HI, got {self.a}..{self.b}", _WHERE)
        if self.kind == "lognormal" and not (math.isfinite(self.a) and self.b >= 0):
            raise UserError(f"lognormal needs a finite MU and SIGMA >= 0, got {self.a}, {self.b}", _WHERE)

    @classmethod
    def parse(cls, text: Any, minimum: int = 0, where: str = _WHERE) -> "LengthDist":
        """'128' or 'fixed:128', 'uniform:16:64', 'lognormal:4.5:0.6'."""
        if isinstance(text, LengthDist):
            return dataclasses.replace(text, minimum=minimum)
        if isinstance(text, bool):
            raise UserError(f"cannot read {text!r} as a length distribution", where)
        if isinstance(text, int):
            return cls("fixed", float(text), 0.0, minimum)
        parts = str(text).strip().split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", float(int(parts[0])), 0.0, minimum)
            kind, *nums = parts
            values = [float(x) for x in nums]
        except ValueError:
            raise UserError(
                f"cannot read {text!r} as a length distribution (fixed:N, uniform:LO:HI, lognormal:MU:SIGMA)", where
            ) from None
        expected = {"fixed": 1, "uniform": 2, "lognormal": 2}.get(kind)
        if expected is None or len(values) != expected:
            raise UserError(
                f"cannot read {text!r} as a length distribution (fixed:N, uniform:LO:HI, lognormal:MU:SIGMA)", where
            )
        return cls(kind, values[0], values[1] if expected == 2 else 0.0, minimum)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{int(self.a)}"
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}:{int(self.b)}"
        return f"lognormal:{self.a:.6g}:{self.b:.6g}"

    def mean(self) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return max(float(self.minimum), math.exp(self.a + self.b**2 / 2))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=n, dtype=np.int64)
        draws = np.rint(rng.lognormal(self.a, self.b, size=n))
        return np.clip(draws, self.minimum, 10**7).astype(np.int64)


# ---- configuration -----------------------------------------------------------------------------
def _floats(text: Any) -> tuple[float, ...]:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return (float(text),)
    if isinstance(text, (list, tuple)):
        return tuple(float(x) for x in text)
    return tuple(float(x) for x in str(text).split(","))


def _sizes(text: Any) -> tuple[int, ...]:
    """Expert bytes: one size for every layer or one per layer; ints are bytes, strings carry units."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out = []
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(int(item))
        elif str(item).strip().isdigit():
            out.append(int(str(item).strip()))
        else:
            out.append(int(parse_quantity(str(item), "bytes", "object_bytes")))
    return tuple(out)


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _opt_str(text: Any) -> str | None:
    return None if text is None or str(text).strip().lower() in ("", "none", "null") else str(text)


def parse_count(text: Any) -> int:
    """A count such as 10000, '10k', '10M' or 2e6 (decimal prefixes), within 0..2**62."""
    from moesim.units import parse_count as checked_count

    return checked_count(text, "count", 0, 2**62)


def _int(text: Any) -> int:
    """An integer setting (layers, experts, requests ...): range-checked, at most 2**62."""
    from moesim.units import parse_count as checked_count

    return checked_count(text, "value", -2**62, 2**62)


def _seed(text: Any) -> int:
    from moesim.units import check_seed

    value = text if isinstance(text, int) else _int(text)
    return check_seed(value, "seed")


def _meta(help_text: str, parse: Callable[[Any], Any]) -> dict[str, Any]:
    return {"help": help_text, "parse": parse}


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of a synthetic trace. Same config (seed included) -> byte-identical trace."""

    n_layers: int = field(default=16, metadata=_meta("MoE layers", _int))
    n_experts: int = field(default=64, metadata=_meta("routed experts per layer", _int))
    top_k: int = field(default=8, metadata=_meta("experts each token routes to per layer", _int))
    object_bytes: tuple[int, ...] = field(
        default=(12 * MiB,),
        metadata=_meta("bytes of one expert: one value for all layers or one per layer ('12 MiB' or bytes)", _sizes),
    )
    model: str | None = field(
        default=None,
        metadata=_meta("catalog model name: its layers, experts, top-k and expert bytes replace the four above",
                       _opt_str),
    )
    zipf: tuple[float, ...] = field(
        default=(1.0,),
        metadata=_meta("Zipf exponent of each layer's expert popularity (one value or one per layer; 0 = uniform)",
                       _floats),
    )
    request_active: tuple[float, ...] = field(
        default=(1.0,),
        metadata=_meta("share of each layer's experts one request routes among: a seeded per-request subset "
                       "drawn by popularity (one value or one per layer; 1 = all experts)", _floats),
    )
    reuse: float = field(
        default=0.0,
        metadata=_meta("probability that a slot repeats one of the previous token's experts at that layer", float),
    )
    cross_layer: float = field(
        default=0.0,
        metadata=_meta("probability that a fresh slot follows the Markov map from the token's expert in the "
                       "same slot at the previous layer", float),
    )
    markov_block: int = field(
        default=8,
        metadata=_meta("the Markov map pairs popularity ranks at random within blocks of this many ranks "
                       "(0 = one block: any expert may lead to any)", int),
    )
    n_requests: int = field(default=1, metadata=_meta("requests (sequences); ignored when accesses > 0", _int))
    accesses: int = field(
        default=0, metadata=_meta("if > 0, draw requests until the trace has at least this many accesses", parse_count)
    )
    prefill: LengthDist = field(
        default=LengthDist("fixed", 32.0, 0.0, 1),
        metadata=_meta("prompt tokens per request: N, fixed:N, uniform:LO:HI or lognormal:MU:SIGMA",
                       lambda t: LengthDist.parse(t, 1)),
    )
    decode: LengthDist = field(
        default=LengthDist("fixed", 128.0, 0.0, 0),
        metadata=_meta("decode tokens (passes) per request, same forms as prefill",
                       lambda t: LengthDist.parse(t, 0)),
    )
    batch_size: int = field(default=1, metadata=_meta("decode slots: a decode pass holds up to this many sequences", _int))
    weights: bool = field(default=False, metadata=_meta("store gate weights (2 more bytes per access)", _bool))
    seed: int = field(default=0, metadata=_meta("seed of every random draw", _seed))

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_experts", "top_k", "n_requests", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}", _WHERE)
        if self.markov_block < 0:
            raise UserError(f"markov_block must be >= 0, got {self.markov_block}", _WHERE)
        if self.top_k > self.n_experts:
            raise UserError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}", _WHERE)
        if self.accesses < 0:
            raise UserError(f"accesses must be >= 0, got {self.accesses}", _WHERE)
        check_seed(self.seed, f"{_WHERE}: seed")
        if not self.request_active or any(not (0.0 < a <= 1.0) for a in self.request_active):
            raise UserError(f"request_active shares must be in (0, 1], got {list(self.request_active)}", _WHERE)
        if not 0.0 <= self.reuse < 1.0:
            raise UserError(f"reuse must be in [0, 1), got {self.reuse}", _WHERE)
        if not 0.0 <= self.cross_layer <= 1.0:
            raise UserError(f"cross_layer must be in [0, 1], got {self.cross_layer}", _WHERE)
        if not self.zipf or any(not math.isfinite(z) or z < 0 for z in self.zipf):
            raise UserError(f"zipf exponents must be finite and >= 0, got {list(self.zipf)}", _WHERE)
        if not self.object_bytes or any(b <= 0 for b in self.object_bytes):
            raise UserError(f"object_bytes must be positive, got {list(self.object_bytes)[:8]}", _WHERE)
        if any(b > MAX_BYTES for b in self.object_bytes):
            raise UserError("object_bytes: an expert of more than 1 EiB is not a real size", _WHERE)
        if self.model is None:
            self._check_per_layer(self.n_layers)

    def _check_per_layer(self, n_layers: int) -> None:
        for name in ("zipf", "request_active"):
            n = len(getattr(self, name))
            if n not in (1, n_layers):
                raise UserError(f"{name} has {n} values for {n_layers} layers (give 1 or {n_layers})", _WHERE)
        if len(self.object_bytes) not in (1, n_layers):
            raise UserError(
                f"object_bytes has {len(self.object_bytes)} values for {n_layers} layers (give 1 or {n_layers})", _WHERE
            )

    # -- shapes ------------------------------------------------------------------------------
    def resolved(self) -> "SynthConfig":
        """The config with a catalog model's shapes filled in (no model: itself)."""
        if self.model is None:
            return self
        try:
            from moesim.traces.models.catalog import load_model
        except ImportError:
            raise UserError(
                f"model {self.model!r}: the model catalog is not available; give n_layers, n_experts, top_k "
                "and object_bytes instead", _WHERE
            ) from None
        spec = load_model(self.model)
        out = dataclasses.replace(
            self,
            n_layers=int(spec.n_moe_layers),
            n_experts=int(spec.n_routed_experts),
            top_k=int(spec.top_k),
            object_bytes=(int(spec.expert_bytes()),),
        )
        out._check_per_layer(out.n_layers)
        return out

    def zipf_per_layer(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.zipf, dtype=np.float64), (self.n_layers,)).copy()

    def active_per_layer(self) -> np.ndarray:
        """Experts each request routes among, per layer: round(share * n_experts), at least top_k."""
        shares = np.broadcast_to(np.asarray(self.request_active, dtype=np.float64), (self.n_layers,))
        return np.clip(np.rint(shares * self.n_experts), self.top_k, self.n_experts).astype(np.int64)

    def bytes_per_layer(self) -> list[int]:
        return [int(b) for b in np.broadcast_to(np.asarray(self.object_bytes, dtype=np.int64), (self.n_layers,))]

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (YAML/JSON): tuples become lists, length distributions strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v for v in value]
            elif isinstance(value, LengthDist):
                value = str(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = _WHERE, base: "SynthConfig | None" = None) -> "SynthConfig":
        """Build from a mapping (a fit's YAML, --set pairs); unknown keys and bad values are UserErrors."""
        if not isinstance(data, dict):
            raise UserError("expected a mapping of synth settings", where)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key not in fields:
                raise UserError(f"unknown setting {key!r}; known: {', '.join(sorted(fields))}", where)
            try:
                values[key] = fields[key].metadata["parse"](raw)
            except UserError as exc:
                raise UserError(f"{key}: {exc.message}", where) from None
            except (TypeError, ValueError):
                raise UserError(f"{key}: cannot read {raw!r} ({fields[key].metadata['help']})", where) from None
        try:
            return dataclasses.replace(base or cls(), **values)
        except UserError as exc:
            raise UserError(exc.message, where) from None

    def with_settings(self, pairs: list[str], where: str = "--set") -> "SynthConfig":
        """Apply 'key=value' strings (the CLI's --set)."""
        data: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UserError(f"expected key=value, got {pair!r}", where)
            data[key.strip()] = value.strip()
        return SynthConfig.from_dict(data, where, base=self)


def help_table() -> list[tuple[str, str, str]]:
    """(name, default, help) for every setting: the CLI's help is generated from the dataclass."""
    default = SynthConfig().to_dict()
    return [(f.name, str(default[f.name]), f.metadata["help"]) for f in dataclasses.fields(SynthConfig)]


PRESETS: dict[str, SynthConfig] = {
    # OLMoE-1B-7B's shape: 16 MoE layers x 64 experts, top-8, bf16 experts of 3*2048*1024*2 B = 12 MiB.
    # Routing knobs are illustrative (the qwen fit's concentration and reuse), not fitted to OLMoE.
    "olmoe": SynthConfig(
        n_layers=16, n_experts=64, top_k=8, object_bytes=(12 * MiB,),
        zipf=(0.8,), request_active=(0.6,), reuse=0.2, cross_layer=0.5, markov_block=8,
        prefill=LengthDist("fixed", 32.0, 0.0, 1), decode=LengthDist("fixed", 128.0, 0.0, 0),
    ),
    # Qwen3-30B-A3B's shape: 48 layers x 128 experts, top-8, bf16 experts of 3*2048*768*2 B = 9 MiB.
    # Routing knobs rounded from `moesim traces fit qwen` (the bundled BigMoeOnEdge trace, run at top-6).
    "qwen3": SynthConfig(
        n_layers=48, n_experts=128, top_k=8, object_bytes=(9 * MiB,),
        zipf=(0.8,), request_active=(0.5,), reuse=0.2, cross_layer=0.6, markov_block=8,
        prefill=LengthDist("fixed", 28.0, 0.0, 1), decode=LengthDist("fixed", 128.0, 0.0, 0),
    ),
    # Mixtral-8x7B's shape: 32 layers x 8 experts, top-2, bf16 experts of 3*4096*14336*2 B = 336 MiB.
    # Routing knobs are illustrative: near-balanced routing over all 8 experts, mild repetition.
    "mixtral": SynthConfig(
        n_layers=32, n_experts=8, top_k=2, object_bytes=(3 * 4096 * 14336 * 2,),
        zipf=(0.3,), request_active=(1.0,), reuse=0.1, cross_layer=0.3, markov_block=8,
        prefill=LengthDist("fixed", 64.0, 0.0, 1), decode=LengthDist("fixed", 128.0, 0.0, 0),
    ),
}


def preset(name: str) -> SynthConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}", "--preset")
    return PRESETS[name]
