"""How each supported Hugging Face MoE architecture ranks and scores its experts.

The recorder never re-decides which experts a token uses: it reads the experts and the gate weights
from the arguments the model passes to its fused experts module (what the model actually applies).
It needs the router's *scores* for two things only:
- to put a token's chosen experts in router rank order (DeepSeek's routers pick with
  `topk(sorted=False)`, so the model's own order is arbitrary);
- to turn a later layer's router logits into a per-expert probability for the gate-lookahead
  predictions (moesim.traces.record.recorder).

Scores per architecture (transformers >= 5, where every MoE block calls `experts(hidden, index,
weights)` and keeps its router as `gate` or `router` with a `weight`):
- softmax routers (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE, gpt-oss): softmax over all experts' logits.
  Top-k of it is the router's choice; norm_topk_prob and gpt-oss's softmax-over-top-k change only the
  applied weights, which the recorder reads from the model.
- DeepSeek-V2: softmax; with `topk_method="group_limited_greedy"`, experts outside the best
  `topk_group` groups (group score = its best expert) are zeroed, as the router does.
- DeepSeek-V3: sigmoid plus the load-balancing bias `e_score_correction_bias` (the choice score),
  experts outside the best `topk_group` groups (group score = sum of its two best) masked out.
The *probability* of an expert is its score clipped at 0 and divided by the token's total, so every
architecture gives a distribution over experts (for softmax routers: exactly the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ARCHITECTURES_DOC = {
    "olmoe": "OLMoE (OlmoeForCausalLM)",
    "mixtral": "Mixtral (MixtralForCausalLM)",
    "qwen2_moe": "Qwen2-MoE / Qwen1.5-MoE (Qwen2MoeForCausalLM)",
    "qwen3_moe": "Qwen3-MoE (Qwen3MoeForCausalLM)",
    "deepseek_v2": "DeepSeek-V2 / V2-Lite (DeepseekV2ForCausalLM)",
    "deepseek_v3": "DeepSeek-V3 / R1 (DeepseekV3ForCausalLM)",
    "gpt_oss": "gpt-oss (GptOssForCausalLM)",
}


@dataclass(frozen=True)
class Architecture:
    """What the recorder needs to know about one model family."""

    model_type: str
    router_attr: str  # attribute of the MoE block holding the router (a module with `weight`)
    scoring: str  # "softmax" | "deepseek_v2" | "deepseek_v3"
    logits_fp32: bool  # the router computes its logits in float32 whatever the model dtype

    def n_experts(self, config: Any) -> int:
        for name in ("n_routed_experts", "num_local_experts", "num_experts"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        raise ValueError(f"{self.model_type}: no expert count in the config")

    def shared_experts(self, config: Any) -> int:
        if self.model_type in ("deepseek_v2", "deepseek_v3"):
            return int(getattr(config, "n_shared_experts", 0) or 0)
        if self.model_type == "qwen2_moe":
            return 1 if int(getattr(config, "shared_expert_intermediate_size", 0) or 0) > 0 else 0
        return 0


ARCHITECTURES: dict[str, Architecture] = {
    "olmoe": Architecture("olmoe", "gate", "softmax", False),
    "mixtral": Architecture("mixtral", "gate", "softmax", False),
    "qwen2_moe": Architecture("qwen2_moe", "gate", "softmax", False),
    "qwen3_moe": Architecture("qwen3_moe", "gate", "softmax", False),
    "deepseek_v2": Architecture("deepseek_v2", "gate", "deepseek_v2", True),
    "deepseek_v3": Architecture("deepseek_v3", "gate", "deepseek_v3", True),
    "gpt_oss": Architecture("gpt_oss", "router", "softmax", False),
}


def router_logits(arch: Architecture, router: Any, hidden: Any) -> Any:
    """Logits of `router` for hidden states [T, H], computed as the model does, returned as float32."""
    import torch.nn.functional as F

    weight = router.weight
    bias = getattr(router, "bias", None)
    if arch.logits_fp32:
        x, w, b = hidden.float(), weight.float(), None if bias is None else bias.float()
    else:
        x, w, b = hidden.to(weight.dtype), weight, bias
    return F.linear(x, w, b).float()


def selection_scores(arch: Architecture, router: Any, config: Any, logits: Any) -> Any:
    """Per-token, per-expert score whose top-k is the router's choice ([T, E] float32)."""
    import torch

    if arch.scoring == "softmax":
        return torch.softmax(logits, dim=-1)
    if arch.scoring == "deepseek_v2":
        scores = torch.softmax(logits, dim=-1)
        if getattr(config, "topk_method", "greedy") == "group_limited_greedy":
            scores = _mask_groups(scores, config, group_score="max", fill=0.0)
        return scores
    if arch.scoring == "deepseek_v3":
        bias = getattr(router, "e_score_correction_bias", None)
        scores = logits.sigmoid()
        if bias is not None:
            scores = scores + bias.float()
        return _mask_groups(scores, config, group_score="top2", fill=float("-inf"))
    raise ValueError(f"unknown scoring {arch.scoring!r}")


def probabilities(arch: Architecture, router: Any, config: Any, logits: Any) -> Any:
    """Selection scores as a distribution over experts per token ([T, E] float32, rows sum to 1)."""
    scores = selection_scores(arch, router, config, logits).clamp(min=0.0)
    total = scores.sum(dim=-1, keepdim=True)
    return scores / total.clamp(min=1e-30)


def _mask_groups(scores: Any, config: Any, group_score: str, fill: float) -> Any:
    """Mask (to `fill`) the experts outside the `topk_group` best groups, as DeepSeek's group-limited routing does."""
    import torch

    n_group = int(getattr(config, "n_group", 1) or 1)
    topk_group = int(getattr(config, "topk_group", n_group) or n_group)
    if n_group <= 1 or topk_group >= n_group:
        return scores
    t, e = scores.shape
    grouped = scores.view(t, n_group, e // n_group)
    if group_score == "max":
        gscore = grouped.max(dim=-1).values
    else:
        gscore = grouped.topk(min(2, e // n_group), dim=-1).values.sum(dim=-1)
    keep = torch.zeros_like(gscore)
    keep.scatter_(1, torch.topk(gscore, k=topk_group, dim=-1, sorted=False).indices, 1.0)
    mask = keep.unsqueeze(-1).expand(t, n_group, e // n_group).reshape(t, e).bool()
    return scores.masked_fill(~mask, fill)
