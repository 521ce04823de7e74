"""Tiny random decoder-only models of many architectures, built in-process (no weights).

``ARCHS`` maps a transformers ``model_type`` to the config fields that make it tiny (two
layers, hidden size 64, a 300-token vocabulary) and, for hybrids, give it one layer of each
kind. ``PATHS`` says which sampling path winnow takes for each: ``fast`` (``decode.sample``)
or ``generate`` (``fallback.sample``, for models whose state the fast loop cannot reach).
"""

from __future__ import annotations

VOCAB = 300
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)
SLIDING = dict(sliding_window=8, layer_types=["sliding_attention", "full_attention"])
MAMBA2 = dict(mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2)
LINEAR = dict(
    layer_types=["linear_attention", "full_attention"],
    linear_num_value_heads=4,
    linear_num_key_heads=2,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    linear_conv_kernel_dim=4,
)

ARCHS: dict[str, dict] = {
    # full attention
    "llama": {},
    "qwen2": {},
    "qwen3": {},
    "gemma": {},
    "phi3": {},
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
    "gpt_neox": {},
    "falcon": dict(head_dim=None, new_decoder_architecture=True, num_kv_heads=2),
    "starcoder2": {},
    "olmo2": {},
    # sliding window (all layers, or alternating with full attention)
    "mistral": dict(sliding_window=8),
    "gemma2": SLIDING,
    "gemma3_text": SLIDING,
    "cohere2": SLIDING,
    "gpt_oss": dict(SLIDING, num_local_experts=4, num_experts_per_tok=2),
    # state-space (Mamba) only
    "mamba": dict(state_size=8, expand=2, conv_kernel=4, time_step_rank=8),
    "falcon_mamba": dict(state_size=8, expand=2, conv_kernel=4, time_step_rank=8),
    "mamba2": dict(state_size=8, expand=2, conv_kernel=4, num_heads=8, head_dim=16, n_groups=1, chunk_size=16),
    # hybrids: attention with Mamba, Mamba2, convolution or linear-attention layers
    "jamba": dict(
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=2,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_dt_rank=8,
        use_mamba_kernels=False,
    ),
    "bamba": dict(MAMBA2, attn_layer_indices=[1], mamba_chunk_size=16),
    "falcon_h1": dict(MAMBA2, mamba_chunk_size=16, mamba_d_ssm=128),
    "granitemoehybrid": dict(
        MAMBA2, layer_types=["mamba", "attention"], mamba_chunk_size=16, num_local_experts=2, num_experts_per_tok=1
    ),
    "nemotron_h": dict(
        layers_block_type=["mamba", "attention"],
        mamba_num_heads=8,
        mamba_head_dim=16,
        n_groups=1,
        ssm_state_size=8,
        conv_kernel=4,
        expand=2,
        chunk_size=16,
    ),
    "zamba": dict(
        head_dim=None,
        layers_block_type=["mamba", "hybrid"],
        attn_layer_period=2,
        attn_layer_offset=1,
        mamba_d_state=8,
        mamba_expand=2,
        mamba_dt_rank=8,
        n_mamba_heads=1,
    ),
    "zamba2": dict(
        head_dim=None,
        layers_block_type=["mamba", "hybrid"],
        mamba_headdim=16,
        mamba_d_state=8,
        mamba_ngroups=1,
        num_mem_blocks=1,
        hybrid_layer_ids=[1],
        n_mamba_heads=8,
        chunk_size=16,
        attention_head_dim=16,
    ),
    "lfm2": dict(layer_types=["conv", "full_attention"], conv_L_cache=3, block_ff_dim=128),
    "qwen3_next": dict(
        LINEAR, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
    ),
    "qwen3_5_text": LINEAR,
    "olmo_hybrid": dict(layer_types=["linear_attention", "full_attention"]),
    # a cache of their own, or state inside their modules: transformers' generate()
    "minimax": dict(layer_types=["linear_attention", "full_attention"], num_local_experts=2, num_experts_per_tok=1),
    "rwkv": dict(attention_hidden_size=64, context_length=256),
    "recurrent_gemma": dict(block_types=["recurrent", "attention"], attention_window_size=8, lru_width=64),
}
GENERATE_PATH = {"minimax", "rwkv", "recurrent_gemma"}
PATHS = {name: "generate" if name in GENERATE_PATH else "fast" for name in ARCHS}


def build(model_type: str, seed: int = 0):
    """A tiny random causal LM of ``model_type``, in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {**COMMON, **ARCHS[model_type]}
    fields = {k: v for k, v in fields.items() if v is not None}  # None: a field this config derives itself
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **fields)
    return AutoModelForCausalLM.from_config(config).eval()
