#!/usr/bin/env python3
"""Writes the HDF5 fixtures the C++ model tests compare against: make_fixtures.py --out DIR.

One file per named config (DIR/<name>.h5) holding the config, the parameters, one input batch, and the logits,
loss and parameter gradients the reference model (gpt_reference.py) computes for them; plus a second batch of
block_size tokens decoded incrementally with the reference's cache in a fixed chunk schedule, and the logits of
every position (naive, and for MLA also absorbed). Parameters are drawn in
float32 and stored in float32; the forward and backward then run in float64 on exactly those values, and the
results are rounded to float32 only when stored, so the fixture is as close to the exact answer as float32 allows.
Deterministic: every file depends only on its config and FIXTURE_SEED. Layout: see README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_reference import GPT, ModelConfig, decode  # noqa: E402

FORMAT = "mlagpt.reference_fixture"
VERSION = 2  # 2 added /decode
FIXTURE_SEED = 1234
BATCH = 2
# Larger than the model's default 0.02: with std 0.02 at n_embd 32 the attention is nearly uniform, and a wrong
# RoPE pairing moves the logits by only ~0.2%; at 0.1 the same bug moves them by ~15-40%.
INIT_STD = 0.1

_SMALL = dict(vocab_size=96, block_size=16, n_embd=32, n_head=4, n_layer=2)
_MLA = dict(attention="mla", q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
            v_head_dim=8, positions="rope", tie_embeddings=False)

FIXTURE_CONFIGS: dict[str, dict] = {
    "mha": dict(_SMALL, attention="mha", positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=True),
    "gqa": dict(_SMALL, attention="gqa", n_kv_head=2, positions="rope"),
    "mqa": dict(_SMALL, attention="mqa"),
    "mha_gpt2": dict(_SMALL, attention="mha", positions="learned", norm="layernorm", mlp="gelu", bias=True,
                     tie_embeddings=True),
    "mla": dict(_SMALL, **_MLA),
    "mla_noqlora": dict(_SMALL, **dict(_MLA, q_lora_rank=0)),
    "mla_ropeless": dict(_SMALL, attention="mla", q_lora_rank=0, kv_lora_rank=16, qk_nope_head_dim=8,
                         qk_rope_head_dim=0, v_head_dim=8, positions="learned", norm="layernorm", mlp="gelu"),
    # The configs above share n_embd 32 and n_head 4, so Dh = Dn = Dv = 8 and H * Dv = n_embd: swapping Dn and Dv,
    # or giving o_proj n_embd inputs instead of H * Dv, passes them. In the configs below no two sizes are equal
    # (B 2, T, S = block_size, V, n_embd, H, Dn, Dv, Dr, Dc, Dq, mlp_hidden; MLA's n_kv_head is n_head by
    # definition), H * Dv != n_embd (above it in one, below in another), and n_embd is not a multiple of H in one.
    "mla_distinct": dict(vocab_size=89, block_size=20, n_embd=36, n_head=3, n_layer=2, attention="mla",
                         q_lora_rank=26, kv_lora_rank=22, qk_nope_head_dim=10, qk_rope_head_dim=6, v_head_dim=14,
                         positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False),
    "mla_distinct_noqlora": dict(vocab_size=79, block_size=18, n_embd=40, n_head=5, n_layer=2, attention="mla",
                                 q_lora_rank=0, kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=8,
                                 v_head_dim=7, positions="rope", norm="rmsnorm", mlp="gelu", tie_embeddings=True),
    "mla_distinct_bias": dict(vocab_size=73, block_size=17, n_embd=30, n_head=4, n_layer=2, attention="mla",
                              q_lora_rank=13, kv_lora_rank=12, qk_nope_head_dim=5, qk_rope_head_dim=6,
                              v_head_dim=10, positions="rope", norm="layernorm", mlp="gelu", bias=True,
                              tie_embeddings=True),
    # Non-default rope_theta and norm_eps, large enough to show: eps 0.02 against mean squares of ~0.1-1 moves
    # every norm by about 1-10%, theta 300 turns the slow RoPE frequencies several times faster.
    "mla_distinct_theta": dict(vocab_size=89, block_size=20, n_embd=36, n_head=3, n_layer=2, attention="mla",
                               q_lora_rank=26, kv_lora_rank=22, qk_nope_head_dim=10, qk_rope_head_dim=6,
                               v_head_dim=14, positions="rope", norm="rmsnorm", mlp="swiglu", rope_theta=300.0,
                               norm_eps=0.02, tie_embeddings=False),
    # GQA with H 6, Hkv 3, Dh 8 all distinct. H * Dh == n_embd cannot be avoided: the model has no head_dim field
    # (Dh = n_embd / n_head by definition).
    "gqa_distinct": dict(vocab_size=83, block_size=19, n_embd=48, n_head=6, n_layer=2, attention="gqa",
                         n_kv_head=3, mlp_hidden=56, positions="rope", norm="rmsnorm", mlp="swiglu",
                         rope_theta=700.0, norm_eps=0.02, tie_embeddings=True),
}


def decode_chunks(block_size: int) -> list[int]:
    """Prefill 5, a 4-token chunk and (after two single tokens) a 3-token chunk after cached positions (the
    offset causal mask), then single tokens up to block_size, so the last step sees the full context."""
    head = [5, 4, 1, 1, 3]
    if block_size < sum(head) + 1:
        raise ValueError(f"block_size {block_size} is too small for the decode schedule {head}")
    return head + [1] * (block_size - sum(head))


@torch.no_grad()
def perturb_for_testing(model: GPT) -> None:
    """Moves norm weights off 1 and biases off 0, so a C++ norm or bias bug changes the outputs."""
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "norm" in name.rsplit(".", 2)[-2]
        if is_norm and leaf == "weight":
            param.add_(0.1 * torch.randn_like(param))
        elif is_norm and leaf == "bias":
            param.normal_(0.0, 0.1)
        elif leaf == "bias":
            param.normal_(0.0, 0.05)


def make_batch(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    # T < block_size on purpose, so nothing in the C++ code may assume T == block_size.
    T = config.block_size - 3
    tokens = torch.randint(0, config.vocab_size, (BATCH, T + 1), dtype=torch.int64)
    idx, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()  # targets are the next tokens
    targets[0, 2] = -1
    targets[1, 0] = -1
    targets[1, T - 1] = -1
    return idx, targets


def compute_fixture(config: ModelConfig) -> dict:
    torch.manual_seed(FIXTURE_SEED)
    model = GPT(config)
    model.reset_parameters(INIT_STD)
    perturb_for_testing(model)
    params32 = {k: v.detach().clone() for k, v in model.state_dict().items()}  # what the file stores
    idx, targets = make_batch(config)

    model = model.double()  # float32 -> float64 is exact, so float64 runs on the stored values
    model.eval()  # dropout (0 in every fixture) is off either way
    logits, loss = model(idx, targets)
    loss.backward()
    grads = {name: p.grad.detach() for name, p in model.named_parameters()}
    missing = sorted(set(params32) - set(grads))
    if missing:
        raise RuntimeError(f"parameters without gradients: {missing}")
    # Drawn after the batch, so the parameters and batch of the version-1 fixtures are unchanged.
    decode_idx = torch.randint(0, config.vocab_size, (BATCH, config.block_size), dtype=torch.int64)
    chunks = decode_chunks(config.block_size)
    decoded = {"logits": decode(model, decode_idx, chunks)}
    if config.attention == "mla":
        decoded["logits_absorbed"] = decode(model, decode_idx, chunks, absorbed=True)
    return dict(params=params32, idx=idx, targets=targets, logits=logits.detach(), loss=loss.detach(),
                grads=grads, decode_idx=decode_idx, decode_chunks=torch.tensor(chunks, dtype=torch.int64),
                decoded=decoded)


def write_fixture(path: Path, name: str, config: ModelConfig, fixture: dict) -> None:
    import h5py
    import numpy as np

    def f32(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(torch.float32).cpu().numpy()

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = np.int64(VERSION)
            f.attrs["config"] = json.dumps(config.to_dict(), sort_keys=True)
            f.attrs["name"] = name
            f.attrs["seed"] = np.int64(FIXTURE_SEED)
            f.attrs["torch_version"] = str(torch.__version__)
            for key, value in fixture["params"].items():
                f.create_dataset(f"params/{key}", data=f32(value))
            f.create_dataset("input/idx", data=fixture["idx"].numpy().astype(np.int64))
            f.create_dataset("input/targets", data=fixture["targets"].numpy().astype(np.int64))
            f.create_dataset("output/logits", data=f32(fixture["logits"]))
            f.create_dataset("output/loss", data=np.float32(fixture["loss"].item()))  # shape ()
            for key, value in fixture["grads"].items():
                f.create_dataset(f"grads/{key}", data=f32(value))
            f.create_dataset("decode/idx", data=fixture["decode_idx"].numpy().astype(np.int64))
            f.create_dataset("decode/chunks", data=fixture["decode_chunks"].numpy().astype(np.int64))
            for key, value in fixture["decoded"].items():
                f.create_dataset(f"decode/{key}", data=f32(value))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader never sees a half-written fixture
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for the <name>.h5 files")
    parser.add_argument("--only", nargs="+", choices=sorted(FIXTURE_CONFIGS), help="write only these configs")
    args = parser.parse_args(argv)

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on '{args.out}'")
    except OSError as error:
        print(f"make_fixtures: cannot write to output directory '{args.out}': {error}", file=sys.stderr)
        return 2

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    for name in args.only or FIXTURE_CONFIGS:
        config = ModelConfig.from_dict(FIXTURE_CONFIGS[name])
        path = args.out / f"{name}.h5"
        try:
            write_fixture(path, name, config, compute_fixture(config))
        except OSError as error:
            print(f"make_fixtures: cannot write '{path}': {error}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
