"""Plain PyTorch reference of the mlagpt GPT model (MHA, GQA, MQA and MLA attention).

Written from the equations (now in docs/mla.md) and the model spec, independently of the C++ code in model/, so
the C++ tests can compare against it (make_fixtures.py turns it into HDF5 fixtures). Readability beats speed here:
attention is written out explicitly (no scaled_dot_product_attention) and RoPE uses complex multiplication,
while the C++ side uses SDPA and real arithmetic, so a shared misunderstanding cannot hide in shared code.

Shape letters: B batch, T sequence, d n_embd, V vocab, H query heads, Hkv key/value heads, Dh head dim;
MLA: Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dv = v_head_dim, Dc = kv_lora_rank, Dq = q_lora_rank.

Decoding: GPT.forward also takes a DecodeCache, so a sequence can be fed in chunks that continue the cached
positions (the incremental decoding of generation). MLA caches what MLA.md says it caches (the normalized latent
and the roped shared key) and decodes either naively (K and V expanded from the latent at every step) or absorbed
(W_UK folded into the query, W_UV applied after attention over the latent, K and V never formed).

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


def rope_interleaved(x: torch.Tensor, theta: float, start: int = 0) -> torch.Tensor:
    """Rotates interleaved pairs (x[2i], x[2i+1]) of the last dim by pos * theta^(-2i/D).

    x: [B, T, heads, D] with positions start..start+T-1 along dim 1. Each pair is read as the complex number
    x[2i] + j x[2i+1] and multiplied by exp(j * angle); DeepSeek's reference code uses the same pairing.
    """
    B, T, heads, D = x.shape
    # Angles in float64 whatever x is, so the reference's own rounding stays below the fixture's float32.
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)  # [D/2]
    positions = torch.arange(start, start + T, dtype=torch.float64, device=x.device)  # [T]
    angles = torch.outer(positions, inv_freq)  # [T, D/2]
    rotation = torch.polar(torch.ones_like(angles), angles)  # [T, D/2] complex128
    compute = torch.promote_types(x.dtype, torch.float32)
    pairs = torch.view_as_complex(x.to(compute).reshape(B, T, heads, D // 2, 2).contiguous())  # [B, T, heads, D/2]
    rotated = pairs * rotation.to(pairs.dtype).view(1, T, 1, D // 2)
    return torch.view_as_real(rotated).reshape(B, T, heads, D).to(x.dtype)  # [B, T, heads, D]


def future_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """[T, S] bool, True where key position s lies in the future of query i.

    The T queries are the newest positions S-T..S-1 of the S keys (a chunk after S-T cached positions).
    """
    query_pos = torch.arange(S - T, S, device=device).view(T, 1)
    key_pos = torch.arange(S, device=device).view(1, S)
    return key_pos > query_pos


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     dropout: nn.Dropout) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v, written out.

    q: [B, H, T, Dqk]; k: [B, H, S, Dqk]; v: [B, H, S, Dv] -> [B, H, T, Dv], S >= T. The queries are the last T of
    the S positions: query i (position S-T+i) attends to keys 0..S-T+i. Without a cache S = T.
    """
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T, S]
    scores = scores.masked_fill(future_mask(T, S, q.device), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return dropout(probs) @ v


class DecodeCache:
    """What incremental decoding keeps between calls: `length` positions so far, and one dict per layer that the
    layer's attention fills (gqa: "k", "v" [B, S, Hkv, Dh] after RoPE; mla: "c_kv" [B, S, Dc] and the roped
    "k_rope" [B, S, 1, Dr]). Tensors grow by concatenation: plainness over preallocation."""

    def __init__(self, n_layer: int, absorbed: bool = False):
        self.length = 0
        self.layers: list[dict] = [{} for _ in range(n_layer)]
        self.absorbed = absorbed  # MLA only: absorbed instead of naive attention over the cache


def append(layer: dict, key: str, value: torch.Tensor) -> torch.Tensor:
    """Appends value [B, T, ...] to layer[key] along positions (dim 1) and returns the whole [B, S, ...]."""
    layer[key] = value if key not in layer else torch.cat([layer[key], value], dim=1)
    return layer[key]


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

    def forward(self, x: torch.Tensor, start: int = 0, layer: dict | None = None,
                absorbed: bool = False) -> torch.Tensor:
        """x: [B, T, d] at positions start..start+T-1; with `layer` (a DecodeCache entry) the keys and values of
        earlier calls are attended to as well. `absorbed` means nothing for these variants."""
        del absorbed
        c = self.config
        B, T, _ = x.shape
        H, Hkv, Dh = c.n_head, c.n_kv_head, c.head_dim
        q = self.q_proj(x).view(B, T, H, Dh)  # [B, T, H, Dh]
        k = self.k_proj(x).view(B, T, Hkv, Dh)  # [B, T, Hkv, Dh]
        v = self.v_proj(x).view(B, T, Hkv, Dh)  # [B, T, Hkv, Dh]
        if c.uses_rope:
            q = rope_interleaved(q, c.rope_theta, start)
            k = rope_interleaved(k, c.rope_theta, start)
        if layer is not None:
            k = append(layer, "k", k)  # [B, S, Hkv, Dh]
            v = append(layer, "v", v)  # [B, S, Hkv, Dh]
        # repeat_interleave puts kv head g at query heads g*(H/Hkv) .. (g+1)*(H/Hkv)-1, i.e. h -> h // (H/Hkv).
        k = k.repeat_interleave(H // Hkv, dim=2)  # [B, S, H, Dh]
        v = v.repeat_interleave(H // Hkv, dim=2)  # [B, S, H, Dh]
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

    def forward(self, x: torch.Tensor, start: int = 0, layer: dict | None = None,
                absorbed: bool = False) -> torch.Tensor:
        """x: [B, T, d] at positions start..start+T-1. With `layer` (a DecodeCache entry) the latent and rope key
        are appended to it and the queries attend to every cached position, naively or `absorbed`."""
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
            q_rope = rope_interleaved(q_rope, c.rope_theta, start)
            k_rope = rope_interleaved(k_rope, c.rope_theta, start)

        if layer is not None:
            c_kv = append(layer, "c_kv", c_kv)  # [B, S, Dc]
            k_rope = append(layer, "k_rope", k_rope)  # [B, S, 1, Dr]
            if absorbed:
                return self.o_proj(self.attend_absorbed(q_nope, q_rope, c_kv, k_rope[:, :, 0]))
        S = c_kv.shape[1]

        kv_up = self.kv_up(c_kv).view(B, S, H, Dn + Dv)  # [B, S, H, Dn+Dv]
        k_nope, v = kv_up.split([Dn, Dv], dim=-1)  # [B, S, H, Dn], [B, S, H, Dv]

        query = torch.cat([q_nope, q_rope], dim=-1)  # [B, T, H, Dn+Dr]
        key = torch.cat([k_nope, k_rope.expand(B, S, H, Dr)], dim=-1)  # [B, S, H, Dn+Dr]
        o = causal_attention(query.transpose(1, 2), key.transpose(1, 2), v.transpose(1, 2),
                             1.0 / math.sqrt(Dn + Dr), self.attn_dropout)  # [B, H, T, Dv]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * Dv))

    def attend_absorbed(self, q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
                        k_rope: torch.Tensor) -> torch.Tensor:
        """MLA.md's absorbed attention over the cached latent, with kv_up's bias kept exactly.

        q_nope [B, T, H, Dn], q_rope [B, T, H, Dr] (roped), c_kv [B, S, Dc], k_rope [B, S, Dr] -> [B, T, H*Dv].
        k_nope_j = W_UK c_j + b_k, so q . k_nope_j = (W_UK^T q) . c_j + q . b_k; v_j = W_UV c_j + b_v, so
        sum_j p_j v_j = W_UV (sum_j p_j c_j) + (sum_j p_j) b_v.
        """
        c = self.config
        B, T, H, _ = q_nope.shape
        S = c_kv.shape[1]
        Dn, Dr, Dv, Dc = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
        w = self.kv_up.weight.view(H, Dn + Dv, Dc)
        w_uk, w_uv = w[:, :Dn], w[:, Dn:]  # [H, Dn, Dc], [H, Dv, Dc]
        q_lat = torch.einsum("bthn,hnc->bthc", q_nope, w_uk)  # [B, T, H, Dc]
        scores = (torch.einsum("bthc,bsc->bhts", q_lat, c_kv)
                  + torch.einsum("bthr,bsr->bhts", q_rope, k_rope))  # [B, H, T, S]
        if self.kv_up.bias is not None:
            b_k = self.kv_up.bias.view(H, Dn + Dv)[:, :Dn]  # [H, Dn]
            scores = scores + torch.einsum("bthn,hn->bht", q_nope, b_k).unsqueeze(-1)
        scores = scores / math.sqrt(Dn + Dr)
        scores = scores.masked_fill(future_mask(T, S, scores.device), float("-inf"))
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))  # [B, H, T, S]
        o_lat = torch.einsum("bhts,bsc->bthc", probs, c_kv)  # [B, T, H, Dc]
        o = torch.einsum("bthc,hvc->bthv", o_lat, w_uv)  # [B, T, H, Dv]
        if self.kv_up.bias is not None:
            b_v = self.kv_up.bias.view(H, Dn + Dv)[:, Dn:]  # [H, Dv]
            o = o + torch.einsum("bht,hv->bthv", probs.sum(-1), b_v)
        return o.reshape(B, T, H * Dv)


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

    def forward(self, x: torch.Tensor, start: int = 0, layer: dict | None = None,
                absorbed: bool = False) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.norm1(x), start, layer, absorbed))
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: DecodeCache | None = None):
        """idx, targets: int64 [B, T] with T <= block_size; targets == -1 are ignored by the loss.

        With a cache, idx continues the cached sequence: its positions start at cache.length, every layer attends
        to the cached positions too, and the cache advances by T.
        Returns (logits [B, T, V], loss or None); the loss is the mean cross entropy over targets != -1.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size {self.config.block_size}")
        x = self.wte(idx)  # [B, T, d]
        if self.config.positions == "learned":
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))  # [T, d] broadcast over B
        x = self.emb_dropout(x)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x)
            else:
                x = block(x, start, cache.layers[i], cache.absorbed)
        if cache is not None:
            cache.length += T
        x = self.norm_f(x)
        head = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight  # [V, d]
        logits = x @ head.t()  # [B, T, V]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss


@torch.no_grad()
def decode(model: GPT, idx: torch.Tensor, chunks: list[int], absorbed: bool = False) -> torch.Tensor:
    """Feeds idx [B, S] through a fresh DecodeCache in chunks of the given sizes (summing to S) and returns the
    logits of every position, [B, S, V]; they must equal model(idx)'s up to round-off."""
    if sum(chunks) != idx.shape[1]:
        raise ValueError(f"chunks {chunks} do not cover {idx.shape[1]} positions")
    cache = DecodeCache(len(model.blocks), absorbed)
    logits, at = [], 0
    for n in chunks:
        logits.append(model(idx[:, at:at + n], cache=cache)[0])
        at += n
    return torch.cat(logits, dim=1)
