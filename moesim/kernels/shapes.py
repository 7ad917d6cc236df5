"""Expert shapes for the real-GPU path, and the packed layout of one expert object.

One object (layer, expert) is one contiguous buffer: W_gate [H, I] | W_up [H, I] | W_down [I, H],
so a single copy moves a whole expert (as mixtral-offloading does) and the kernel finds the three
matrices at fixed offsets inside a slot. Object ids follow the trace: layer * n_experts + expert.
Pure Python: no torch import, so the CLI and planners may use it on a core install.
"""

from __future__ import annotations

from dataclasses import dataclass

ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class ExpertShapes:
    """Shapes of the routed experts of one model (every MoE layer alike, as in all catalog models)."""

    hidden: int
    inter: int
    n_layers: int
    n_experts: int
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        for name in ("hidden", "inter", "n_layers", "n_experts"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dtype not in ITEMSIZE:
            raise ValueError(f"dtype must be one of {', '.join(ITEMSIZE)}, got {self.dtype!r}")

    @classmethod
    def from_model_spec(cls, spec: object, dtype: str | None = None, n_layers: int | None = None) -> "ExpertShapes":
        """From a ModelSpec-like object (hidden_size, moe_intermediate_size, n_moe_layers, n_routed_experts)."""
        return cls(
            hidden=int(getattr(spec, "hidden_size")),
            inter=int(getattr(spec, "moe_intermediate_size")),
            n_layers=int(n_layers if n_layers is not None else getattr(spec, "n_moe_layers")),
            n_experts=int(getattr(spec, "n_routed_experts")),
            dtype=dtype or str(getattr(spec, "default_dtype", "bf16")),
        )

    @property
    def matrix_elems(self) -> int:
        return self.hidden * self.inter

    @property
    def elems(self) -> int:
        """Elements of one packed expert: gate, up and down."""
        return 3 * self.matrix_elems

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def expert_bytes(self) -> int:
        return self.elems * self.itemsize

    @property
    def n_objects(self) -> int:
        return self.n_layers * self.n_experts

    @property
    def gate_offset(self) -> int:
        return 0

    @property
    def up_offset(self) -> int:
        return self.matrix_elems

    @property
    def down_offset(self) -> int:
        return 2 * self.matrix_elems

    def obj(self, layer: int, expert: int) -> int:
        return layer * self.n_experts + expert

    def layer_of(self, obj: int) -> int:
        return obj // self.n_experts

    def expert_of(self, obj: int) -> int:
        return obj % self.n_experts

    def torch_dtype(self):  # -> torch.dtype; torch is imported only here
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]
