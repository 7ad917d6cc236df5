"""The recorder's forward hooks (each MoE layer's routing and gate lookahead, per forward pass) and the
trace parts they fill; the recorder (moesim/traces/record/recorder.py) says what is recorded and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta, expert_dtype
from moesim.traces.record.hf_model import MoeLayer
from moesim.traces.record.routing_rules import Architecture, probabilities, router_logits, selection_scores


class RoutingHooks:
    """Forward hooks that capture, per forward pass, each MoE layer's routing for the valid tokens.

    `valid` (a bool tensor over the flattened batch x sequence rows) is set before every forward so
    padding and finished sequences are dropped inside the hooks.
    """

    def __init__(self, layers: list[MoeLayer], arch: Architecture, config: Any, lookahead: int, top_n: int) -> None:
        self.layers = layers
        self.arch = arch
        self.config = config
        self.lookahead = lookahead
        self.top_n = top_n
        self.hidden = int(config.hidden_size)
        self.valid: Any = None
        self._x: dict[int, Any] = {}
        self.experts: dict[int, np.ndarray] = {}
        self.weights: dict[int, np.ndarray] = {}
        self.predictions: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._handles: list[Any] = []

    def install(self) -> None:
        for layer in self.layers:
            index = layer.trace_layer
            self._handles.append(layer.block.register_forward_pre_hook(self._block_hook(index), with_kwargs=True))
            self._handles.append(layer.experts.register_forward_pre_hook(self._experts_hook(index), with_kwargs=True))
            if self.lookahead and index + 1 < len(self.layers):
                if layer.norm is None:
                    raise UserError(f"layer {layer.model_layer} has no post_attention_layernorm; "
                                    "gate lookahead is not available for this model", "--lookahead")
                self._handles.append(layer.norm.register_forward_pre_hook(self._norm_hook(index), with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin(self, valid: Any) -> None:
        self.valid = valid
        self._x.clear()
        self.experts.clear()
        self.weights.clear()
        self.predictions.clear()

    def check_complete(self) -> None:
        missing = [ly.model_layer for ly in self.layers if ly.trace_layer not in self.experts]
        if missing:
            raise UserError(f"the routing hooks did not fire for layer(s) {missing}: this model's MoE forward "
                            "does not call its experts module (custom kernels?); load it without them", "model")

    # hook factories ---------------------------------------------------------------------------
    def _block_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            self._x[trace_layer] = x.reshape(-1, self.hidden)[self.valid]

        return hook

    def _experts_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            import torch

            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            index = next(t for t in tensors if not t.is_floating_point())
            weight = next(t for t in tensors if t.is_floating_point() and t.shape == index.shape)
            index, weight = index[self.valid], weight[self.valid]
            layer = self.layers[trace_layer]
            logits = router_logits(self.arch, layer.router, self._x[trace_layer])
            scores = selection_scores(self.arch, layer.router, self.config, logits).gather(1, index.long())
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices
            self.experts[trace_layer] = index.gather(1, order).cpu().numpy()
            self.weights[trace_layer] = weight.gather(1, order).float().cpu().numpy()

        return hook

    def _norm_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            import torch

            h = (args[0] if args else kwargs["hidden_states"]).reshape(-1, self.hidden)[self.valid]
            for d in range(1, self.lookahead + 1):
                if trace_layer + d >= len(self.layers):
                    break
                target = self.layers[trace_layer + d]
                x = target.norm.forward(h)  # .forward: no hooks fire on the target layer's norm
                logits = router_logits(self.arch, target.router, x)
                mean = probabilities(self.arch, target.router, self.config, logits).mean(dim=0)
                n = min(self.top_n, mean.shape[0])
                # top-n by mean probability, ties to the lower expert id (stable sort on descending score)
                order = torch.sort(mean, descending=True, stable=True).indices[:n]
                self.predictions[(trace_layer, d)] = (order.cpu().numpy(), mean[order].cpu().numpy().astype(np.float32))

        return hook


# ---- assembling the trace -------------------------------------------------------------------
@dataclass
class TraceParts:
    """Arrays of the trace, appended pass by pass."""

    n_layers: int
    lookahead: int
    top_n: int
    phases: list[int] = field(default_factory=list)
    token_request: list[np.ndarray] = field(default_factory=list)
    token_position: list[np.ndarray] = field(default_factory=list)
    cell_tokens: list[int] = field(default_factory=list)
    experts: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    pred: dict[int, list[np.ndarray]] = field(default_factory=dict)
    pred_score: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def add_pass(self, phase: int, requests: np.ndarray, positions: np.ndarray, hooks: RoutingHooks) -> None:
        self.phases.append(phase)
        self.token_request.append(requests.astype(np.int32))
        self.token_position.append(positions.astype(np.int32))
        for layer in range(self.n_layers):
            experts = hooks.experts[layer]
            self.cell_tokens.append(int(experts.shape[0]))
            self.experts.append(experts.reshape(-1))
            self.weights.append(hooks.weights[layer].reshape(-1))
            for d in range(1, self.lookahead + 1):
                ids = np.full(self.top_n, -1, dtype=np.int64)
                score = np.zeros(self.top_n, dtype=np.float32)
                if (layer, d) in hooks.predictions:
                    got_ids, got_score = hooks.predictions[(layer, d)]
                    ids[: got_ids.size] = got_ids
                    score[: got_score.size] = got_score
                self.pred.setdefault(d, []).append(ids)
                self.pred_score.setdefault(d, []).append(score)

    def build(self, meta: TraceMeta) -> Trace:
        n_p = len(self.phases)
        tokens_per_pass = np.array([r.size for r in self.token_request], dtype=np.int64)
        pass_token_offsets = np.zeros(n_p + 1, dtype=np.int64)
        np.cumsum(tokens_per_pass, out=pass_token_offsets[1:])
        pass_cell_offsets = np.arange(n_p + 1, dtype=np.int64) * self.n_layers
        cell_sizes = np.array([e.size for e in self.experts], dtype=np.int64)
        cell_offsets = np.zeros(cell_sizes.size + 1, dtype=np.int64)
        np.cumsum(cell_sizes, out=cell_offsets[1:])
        edtype = expert_dtype(meta.n_experts)
        predictions: dict[str, np.ndarray] = {}
        for d in range(1, self.lookahead + 1):
            predictions[f"lookahead_{d}"] = np.stack(self.pred[d]).astype(edtype)
            predictions[f"lookahead_{d}_score"] = np.stack(self.pred_score[d]).astype(np.float32)
        return Trace(
            meta=meta,
            pass_phase=np.asarray(self.phases, dtype=np.int8),
            pass_cell_offsets=pass_cell_offsets,
            pass_token_offsets=pass_token_offsets,
            token_request=_cat(self.token_request, np.int32),
            token_position=_cat(self.token_position, np.int32),
            cell_layer=np.tile(np.arange(self.n_layers, dtype=np.int16), n_p),
            cell_offsets=cell_offsets,
            cell_tokens=np.asarray(self.cell_tokens, dtype=np.int32),
            expert=_cat(self.experts, edtype),
            weight=_cat(self.weights, np.float32).astype(np.float16),
            predictions=predictions,
        )


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
