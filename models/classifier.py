"""The DeepSeek-V3 sequence classifier: config presets, construction, LoRA on a local base.

Why DeepSeek-V3 at this size: multi-head latent attention and a small routed
mixture of experts give the model per-token specialisation (amount words vs
device words vs context words) at a parameter count that trains in minutes on
two CPU cores and serves at thousands of events per second from ONNX.

The routed experts run through ``dense_experts_forward`` (registered as the
``"dense"`` experts implementation): every expert computes every token and a
[tokens, experts] matrix that is zero except at the top-k routes weights the
results. It is the routed result exactly (two GEMMs instead of a Python loop
over experts), so it is used for training *and* export: the stock
sort/histc/grouped-GEMM path does not export and the eager loop traces wrongly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from transformers import DeepseekV3Config, DeepseekV3ForSequenceClassification
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

DENSE_EXPERTS = "dense"

# Sizes: "tiny" for tests (builds and trains in seconds), "default" for the
# shipped CPU bundles, "large" for a GPU host.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        kv_lora_rank=8, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=4,
        intermediate_size=32, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
        n_shared_experts=1,
    ),
    "default": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
        intermediate_size=128, moe_intermediate_size=64, n_routed_experts=4, num_experts_per_tok=2,
        n_shared_experts=1,
    ),
    "large": dict(
        hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
        kv_lora_rank=128, q_lora_rank=192, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
        intermediate_size=512, moe_intermediate_size=256, n_routed_experts=16, num_experts_per_tok=2,
        n_shared_experts=1,
    ),
}

# Settings every preset shares: one expert group (the V3 defaults assume 8 and
# crash with a handful of experts), no KV cache (breaks torch.export), MoE from
# the first layer, two labels.
COMMON: dict[str, Any] = dict(
    n_group=1, topk_group=1, first_k_dense_replace=0, use_cache=False, num_labels=2,
    routed_scaling_factor=1.0, norm_topk_prob=True, attention_dropout=0.0, tie_word_embeddings=False,
    bos_token_id=None, eos_token_id=None,
)


def dense_experts_forward(self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                          top_k_weights: torch.Tensor) -> torch.Tensor:
    """Routed experts computed densely: exactly the top-k mixture, export-friendly.

    ``gate_up_proj`` is [E, 2I, H] and ``down_proj`` [E, H, I]. Folding the
    routing weights into the intermediate activations turns the down projection
    of all experts into one [T, E*I] x [E*I, H] GEMM.
    """
    tokens, hidden = hidden_states.shape
    n_exp, two_i, _ = self.gate_up_proj.shape
    inter = two_i // 2
    gate_up = (hidden_states @ self.gate_up_proj.reshape(n_exp * two_i, hidden).t()).view(tokens, n_exp, two_i)
    gate, up = gate_up.split(inter, dim=-1)
    act = self.act_fn(gate) * up  # [T, E, I]
    routing = torch.zeros(tokens, n_exp, dtype=act.dtype, device=act.device)
    routing = routing.scatter(1, top_k_index, top_k_weights.to(act.dtype))
    mixed = (act * routing.unsqueeze(-1)).reshape(tokens, n_exp * inter)
    down = self.down_proj.transpose(1, 2).reshape(n_exp * inter, hidden)
    return (mixed @ down).to(hidden_states.dtype)


ALL_EXPERTS_FUNCTIONS.register(DENSE_EXPERTS, dense_experts_forward)


def make_config(preset: str, vocab_size: int, pad_token_id: int, max_seq_len: int,
                overrides: dict[str, Any] | None = None) -> DeepseekV3Config:
    """A classification config from a preset; ``overrides`` wins over the preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    kw = {**PRESETS[preset], **COMMON, **(overrides or {})}
    kw.update(vocab_size=int(vocab_size), pad_token_id=int(pad_token_id),
              max_position_embeddings=max(64, int(max_seq_len)))
    return DeepseekV3Config(**kw)


def use_dense_experts(model: torch.nn.Module) -> torch.nn.Module:
    """Select the dense experts implementation (export; the default after ``build``)."""
    model.set_experts_implementation(DENSE_EXPERTS)
    return model


ROUTED_EXPERTS = "eager"  # transformers' own loop: each token through its top-k experts only


def use_routed_experts(model: torch.nn.Module) -> torch.nn.Module:
    """Select the stock routed experts, for training.

    Each token only runs through its top-2 of 4 experts, so a training step of the
    default preset is ~12% faster on 2 CPU cores than with the dense formulation, with
    the same outputs and gradients up to float rounding
    (tests/test_models_transactions.py::test_dense_experts_equal_routed). It does not
    export; ``models.export`` switches back to dense.
    """
    model.set_experts_implementation(ROUTED_EXPERTS)
    return model


def build(config: DeepseekV3Config, seed: int = 0) -> DeepseekV3ForSequenceClassification:
    """A freshly initialised classifier (deterministic for a seed), dense experts, eager attention."""
    torch.manual_seed(seed)
    model = DeepseekV3ForSequenceClassification._from_config(config, attn_implementation="eager")
    return use_dense_experts(model)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_fields(model: torch.nn.Module) -> dict[str, Any]:
    """The model's config as a card records it: its public fields, sorted, without the label maps."""
    cfg = model.config.to_dict()
    return {k: cfg[k] for k in sorted(cfg) if not k.startswith("_") and k not in ("id2label", "label2id")}


def architecture(model: torch.nn.Module) -> dict[str, Any]:
    """What the card records about the network: class, config and parameter count."""
    return {"class": type(model).__name__, "parameters": n_params(model), "config": config_fields(model),
            "experts_implementation": DENSE_EXPERTS}


# -- LoRA on a local pretrained checkpoint ------------------------------------------

LORA_TARGETS_DEFAULT = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")


def load_base(base_dir: str | Path, pad_token_id: int, vocab_size: int | None = None,
              ) -> DeepseekV3ForSequenceClassification:
    """A sequence classifier from a local DeepSeek causal-LM (or classifier) directory.

    The backbone weights load from the checkpoint; the ``score`` head is new
    (transformers warns about it) and is trained fully. ``vocab_size`` resizes
    the embeddings when our word-level vocabulary differs from the base's.
    """
    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"--base {base_dir}: no config.json (expected a local DeepSeek checkpoint dir)")
    config = DeepseekV3Config.from_pretrained(base_dir)
    config.num_labels = 2
    config.use_cache = False
    config.pad_token_id = int(pad_token_id)
    config.n_group, config.topk_group = config.n_group or 1, config.topk_group or 1
    model = DeepseekV3ForSequenceClassification.from_pretrained(base_dir, config=config, attn_implementation="eager")
    if vocab_size is not None and model.get_input_embeddings().num_embeddings != vocab_size:
        model.resize_token_embeddings(vocab_size)
    return use_dense_experts(model)


def add_lora(model: torch.nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
             targets: Sequence[str] | None = None) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters on the attention projections; the head trains fully.

    Only target names that exist in the model are used, so the default list fits
    both q_lora and plain-q_proj variants of MLA.
    """
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    wanted = [t for t in (targets or LORA_TARGETS_DEFAULT) if t in present]
    if not wanted:
        raise ValueError(f"none of the LoRA target modules {list(targets or LORA_TARGETS_DEFAULT)} exist in the model")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=wanted,
                     modules_to_save=["score"], task_type="SEQ_CLS")
    return get_peft_model(model, cfg)


def lora_from_base(base_dir: str | Path, lora: Mapping[str, Any] | None, pad_token_id: int, vocab_size: int,
                   ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``--base DIR``: the local checkpoint as a classifier with LoRA adapters, and the card's record of it."""
    cfg = dict(lora or {})
    return add_lora(load_base(base_dir, pad_token_id, vocab_size), **cfg), {"base": str(base_dir), "lora": cfg}


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold adapters into the base weights (what gets exported); no-op for a plain model."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return use_dense_experts(model)
