"""Plain PyTorch reference of the mlagpt GPT model (MHA, GQA, MQA and MLA attention).

Written from the equations (now in docs/mla.md) and the model spec, independently of the C++ code in model/, so
the C++ tests can compare against it (make_fixtures.py turns it into HDF5 fixtures). Readability beats speed here:
attention is written out explicitly (no scaled_dot_product_attention) and RoPE uses complex multiplication,
while the C++ side uses SDPA and real arithmetic, so a shared misunderstanding cannot hide in shared code.

Shape letters: B batch, T sequence, d n_embd, V vocab, H query heads, Hkv key/value heads, Dh head dim;
MLA: Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dv = v_head_dim, Dc = kv_lora_rank, Dq = q_lora_rank.

Depends on torch only. The module works in any floating dtype; the fixtures run it in float64.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = ("mha", "gqa", "mqa", "mla")
NORMS = ("rmsnorm", "layernorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


@dataclass
class ModelConfig:
    vocab_size: int = 256
    block_size: int = 64
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    attention: str = "mha"  # mha | gqa | mqa | mla
    n_kv_head: int = 0  # gqa: 0 means n_head; resolved to n_head (mha, mla) or 1 (mqa)
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 1e-5
    mlp: str = "swiglu"  # gelu | swiglu
    mlp_hidden: int = 0  # 0: gelu 4*d, swiglu 8d/3 rounded up to a multiple of 8
    positions: str = "rope"  # learned | rope
    rope_theta: float = 10000.0
    bias: bool = False  # every Linear (and LayerNorm) has a bias iff True
    dropout: float = 0.0
    tie_embeddings: bool = True
    q_lora_rank: int = 0  # MLA only: Dq, 0 = no query compression
    kv_lora_rank: int = 0  # MLA only: Dc
    qk_nope_head_dim: int = 0  # MLA only: Dn
    qk_rope_head_dim: int = 0  # MLA only: Dr
    v_head_dim: int = 0  # MLA only: Dv

    def __post_init__(self):
        # Resolve the "0 means default" fields once, so the stored JSON states every size explicitly and
        # re-reading it gives the same config.
        if self.attention == "mha" or self.attention == "mla":
            self.n_kv_head = self.n_head  # MLA has no separate kv heads; n_head keeps the field meaningful
        elif self.attention == "mqa":
            self.n_kv_head = 1
        elif self.n_kv_head == 0:
            self.n_kv_head = self.n_head
        if self.mlp_hidden == 0:
            if self.mlp == "gelu":
                self.mlp_hidden = 4 * self.n_embd
            else:
                self.mlp_hidden = ((8 * self.n_embd // 3 + 7) // 8) * 8
        self.validate()

    @property
    def head_dim(self) -> int:
        """Dh of mha/gqa/mqa (MLA uses Dn, Dr and Dv instead)."""
        return self.n_embd // self.n_head

    @property
    def uses_rope(self) -> bool:
        return self.positions == "rope"

    def validate(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig: {message}")

        require(self.attention in ATTENTIONS, f"attention '{self.attention}' is not one of {ATTENTIONS}")
        require(self.norm in NORMS, f"norm '{self.norm}' is not one of {NORMS}")
        require(self.mlp in MLPS, f"mlp '{self.mlp}' is not one of {MLPS}")
        require(self.positions in POSITIONS, f"positions '{self.positions}' is not one of {POSITIONS}")
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "mlp_hidden"):
            require(getattr(self, name) > 0, f"{name} ({getattr(self, name)}) must be > 0")
        require(0.0 <= self.dropout < 1.0, f"dropout ({self.dropout}) must be in [0, 1)")
        require(self.norm_eps > 0.0, f"norm_eps ({self.norm_eps}) must be > 0")
        if self.attention == "mla":
            for name in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                require(getattr(self, name) >= 0, f"{name} ({getattr(self, name)}) must be >= 0")
            require(self.kv_lora_rank > 0, f"mla needs kv_lora_rank > 0 (got {self.kv_lora_rank})")
            require(self.v_head_dim > 0, f"mla needs v_head_dim > 0 (got {self.v_head_dim})")
            require(self.qk_nope_head_dim + self.qk_rope_head_dim > 0,
                    f"mla needs qk_nope_head_dim ({self.qk_nope_head_dim}) + qk_rope_head_dim "
                    f"({self.qk_rope_head_dim}) > 0")
            if self.uses_rope:
                require(self.qk_rope_head_dim % 2 == 0,
                        f"rope needs an even qk_rope_head_dim (got {self.qk_rope_head_dim})")
        else:
            require(self.n_embd % self.n_head == 0,
                    f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
            require(self.n_kv_head > 0 and self.n_head % self.n_kv_head == 0,
                    f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
            if self.uses_rope:
                require(self.head_dim % 2 == 0, f"rope needs an even head_dim (got {self.head_dim})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in at least float32 (float64 stays float64)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        xc = x.to(compute)
        y = xc * torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight.to(compute)
        return y.to(x.dtype)


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


def rope_interleaved(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotates interleaved pairs (x[2i], x[2i+1]) of the last dim by pos * theta^(-2i/D).

    x: [B, T, heads, D] with positions 0..T-1 along dim 1. Each pair is read as the complex number
    x[2i] + j x[2i+1] and multiplied by exp(j * angle); DeepSeek's reference code uses the same pairing.
    """
    B, T, heads, D = x.shape
    # Angles in float64 whatever x is, so the reference's own rounding stays below the fixture's float32.
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)  # [D/2]
    positions = torch.arange(T, dtype=torch.float64, device=x.device)  # [T]
    angles = torch.outer(positions, inv_freq)  # [T, D/2]
    rotation = torch.polar(torch.ones_like(angles), angles)  # [T, D/2] complex128
    compute = torch.promote_types(x.dtype, torch.float32)
    pairs = torch.view_as_complex(x.to(compute).reshape(B, T, heads, D // 2, 2).contiguous())  # [B, T, heads, D/2]
    rotated = pairs * rotation.to(pairs.dtype).view(1, T, 1, D // 2)
    return torch.view_as_real(rotated).reshape(B, T, heads, D).to(x.dtype)  # [B, T, heads, D]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     dropout: nn.Dropout) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v, written out.

    q, k: [B, H, T, Dqk]; v: [B, H, T, Dv] -> [B, H, T, Dv]. Query t attends to keys 0..t.
    """
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T, T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=q.device), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return dropout(probs) @ v


# ---------------------------------------------------------------------------------------------------------------
# Attention variants


class GroupedQueryAttention(nn.Module):
    """MHA (Hkv = H), GQA (H divisible by Hkv) and MQA (Hkv = 1); query head h reads kv head h // (H / Hkv)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        H, Hkv, Dh, d = config.n_head, config.n_kv_head, config.head_dim, config.n_embd
        self.q_proj = nn.Linear(d, H * Dh, bias=config.bias)
        self.k_proj = nn.Linear(d, Hkv * Dh, bias=config.bias)
        self.v_proj = nn.Linear(d, Hkv * Dh, bias=config.bias)
        self.o_proj = nn.Linear(H * Dh, d, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        B, T, _ = x.shape
        H, Hkv, Dh = c.n_head, c.n_kv_head, c.head_dim
        q = self.q_proj(x).view(B, T, H, Dh)  # [B, T, H, Dh]
        k = self.k_proj(x).view(B, T, Hkv, Dh)  # [B, T, Hkv, Dh]
        v = self.v_proj(x).view(B, T, Hkv, Dh)  # [B, T, Hkv, Dh]
        if c.uses_rope:
            q = rope_interleaved(q, c.rope_theta)
            k = rope_interleaved(k, c.rope_theta)
        # repeat_interleave puts kv head g at query heads g*(H/Hkv) .. (g+1)*(H/Hkv)-1, i.e. h -> h // (H/Hkv).
        k = k.repeat_interleave(H // Hkv, dim=2)  # [B, T, H, Dh]
        v = v.repeat_interleave(H // Hkv, dim=2)  # [B, T, H, Dh]
        o = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                             1.0 / math.sqrt(Dh), self.attn_dropout)  # [B, H, T, Dh]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * Dh))


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2 MLA in its naive (expanded) form, the form used for training and prefill."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, H = config.n_embd, config.n_head
        Dn, Dr, Dv = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        Dc, Dq = config.kv_lora_rank, config.q_lora_rank
        if Dq == 0:
            self.q_proj = nn.Linear(d, H * (Dn + Dr), bias=config.bias)
        else:
            self.q_down = nn.Linear(d, Dq, bias=config.bias)
            self.q_norm = RMSNorm(Dq, config.norm_eps)
            self.q_up = nn.Linear(Dq, H * (Dn + Dr), bias=config.bias)
        # One matrix for W_DKV (rows 0..Dc-1) and W_KR (rows Dc..Dc+Dr-1), as in docs/mla.md.
        self.kv_down = nn.Linear(d, Dc + Dr, bias=config.bias)
        self.kv_norm = RMSNorm(Dc, config.norm_eps)
        # W_UK and W_UV as one matrix: per head, Dn k_nope rows then Dv value rows.
        self.kv_up = nn.Linear(Dc, H * (Dn + Dv), bias=config.bias)
        self.o_proj = nn.Linear(H * Dv, d, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        B, T, _ = x.shape
        H = c.n_head
        Dn, Dr, Dv, Dc = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank

        if c.q_lora_rank == 0:
            q = self.q_proj(x)
        else:
            q = self.q_up(self.q_norm(self.q_down(x)))  # c_q = RMSNorm(W_DQ x): [B, T, Dq] -> [B, T, H*(Dn+Dr)]
        q = q.view(B, T, H, Dn + Dr)  # [B, T, H, Dn+Dr]
        q_nope, q_rope = q.split([Dn, Dr], dim=-1)  # [B, T, H, Dn], [B, T, H, Dr]

        kv = self.kv_down(x)  # [B, T, Dc+Dr]
        c_kv = self.kv_norm(kv[..., :Dc])  # [B, T, Dc]: the cached latent
        k_rope = kv[..., Dc:].view(B, T, 1, Dr)  # [B, T, 1, Dr]: one rope key for all heads

        if c.uses_rope and Dr > 0:
            q_rope = rope_interleaved(q_rope, c.rope_theta)
            k_rope = rope_interleaved(k_rope, c.rope_theta)

        kv_up = self.kv_up(c_kv).view(B, T, H, Dn + Dv)  # [B, T, H, Dn+Dv]
        k_nope, v = kv_up.split([Dn, Dv], dim=-1)  # [B, T, H, Dn], [B, T, H, Dv]

        query = torch.cat([q_nope, q_rope], dim=-1)  # [B, T, H, Dn+Dr]
        key = torch.cat([k_nope, k_rope.expand(B, T, H, Dr)], dim=-1)  # [B, T, H, Dn+Dr]
        o = causal_attention(query.transpose(1, 2), key.transpose(1, 2), v.transpose(1, 2),
                             1.0 / math.sqrt(Dn + Dr), self.attn_dropout)  # [B, H, T, Dv]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * Dv))


# ---------------------------------------------------------------------------------------------------------------
# MLP, block, model


class MLP(nn.Module):
    """gelu: proj(gelu(fc(x))) with exact (erf) GELU; swiglu: proj(silu(gate(x)) * fc(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.mlp
        d, hidden = config.n_embd, config.mlp_hidden
        if self.kind == "swiglu":
            self.gate = nn.Linear(d, hidden, bias=config.bias)
        self.fc = nn.Linear(d, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, d, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.proj(F.silu(self.gate(x)) * self.fc(x))
        return self.proj(F.gelu(self.fc(x), approximate="none"))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1 = make_norm(config, config.n_embd)
        self.attn = MultiHeadLatentAttention(config) if config.attention == "mla" else GroupedQueryAttention(config)
        self.norm2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.norm1(x)))
        return x + self.resid_dropout(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config, config.n_embd)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """normal(0, std) for Linear and Embedding weights, zero biases, unit norm weights."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx, targets: int64 [B, T] with T <= block_size; targets == -1 are ignored by the loss.

        Returns (logits [B, T, V], loss or None); the loss is the mean cross entropy over targets != -1.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.wte(idx)  # [B, T, d]
        if self.config.positions == "learned":
            x = x + self.wpe(torch.arange(T, device=idx.device))  # [T, d] broadcast over B
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm_f(x)
        head = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight  # [V, d]
        logits = x @ head.t()  # [B, T, V]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss
