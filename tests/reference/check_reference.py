#!/usr/bin/env python3
"""Self-checks of the reference model; exits non-zero if any fails. Runs in a few seconds on one CPU core.

The C++ tests trust gpt_reference.py, so it gets tests of its own, each against a property or a second,
differently written formula rather than against stored numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_reference import GPT, ModelConfig, decode, rope_interleaved  # noqa: E402
from make_fixtures import FIXTURE_CONFIGS, INIT_STD, VERSION, decode_chunks, perturb_for_testing  # noqa: E402

failures: list[str] = []


def check(ok: bool, message: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {message}")
    if not ok:
        failures.append(message)


def build(values: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig.from_dict(values))
    model.reset_parameters(INIT_STD)
    perturb_for_testing(model)
    return model.double().eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def check_causality() -> None:
    """Changing token s must leave the logits at positions < s unchanged and change those at >= s."""
    for name, values in FIXTURE_CONFIGS.items():
        model = build(values)
        c = model.config
        T, s = c.block_size - 3, 7
        idx = torch.randint(0, c.vocab_size, (2, T))
        changed = idx.clone()
        changed[:, s] = (idx[:, s] + 1) % c.vocab_size
        a, _ = model(idx)
        b, _ = model(changed)
        past, future = max_diff(a[:, :s], b[:, :s]), max_diff(a[:, s:], b[:, s:])
        check(past == 0.0 and future > 1e-6, f"causality {name}: past diff {past:.1e}, future diff {future:.1e}")


@torch.no_grad()
def check_gqa_equals_mha() -> None:
    """GQA with n_kv_head == n_head, and MQA versus GQA with one kv head, on identical weights."""
    base = dict(FIXTURE_CONFIGS["mha"])
    idx = torch.randint(0, base["vocab_size"], (2, 11))
    for a_values, b_values, label in [
        (dict(base, attention="mha"), dict(base, attention="gqa", n_kv_head=base["n_head"]), "gqa(Hkv=H) == mha"),
        (dict(base, attention="mqa"), dict(base, attention="gqa", n_kv_head=1), "mqa == gqa(Hkv=1)"),
    ]:
        a, b = build(a_values), build(b_values)
        b.load_state_dict(a.state_dict())
        diff = max_diff(a(idx)[0], b(idx)[0])
        check(diff == 0.0, f"{label}: max logit diff {diff:.1e}")

    # GQA head mapping: with kv head g copied to every query head h with h // (H/Hkv) == g, MHA must match.
    gqa = build(dict(base, attention="gqa", n_kv_head=2))
    mha = build(dict(base, attention="mha"))
    state = gqa.state_dict()
    H, Hkv, Dh = base["n_head"], 2, base["n_embd"] // base["n_head"]
    for key, value in list(state.items()):
        if key.endswith(("k_proj.weight", "v_proj.weight")):
            per_head = value.view(Hkv, Dh, -1)  # [Hkv, Dh, d]
            state[key] = per_head[torch.arange(H) // (H // Hkv)].reshape(H * Dh, -1)  # [H*Dh, d]
    mha.load_state_dict(state)
    diff = max_diff(gqa(idx)[0], mha(idx)[0])
    check(diff < 1e-12, f"gqa(Hkv=2) == mha with kv heads repeated as h // (H/Hkv): max diff {diff:.1e}")


def check_rope() -> None:
    """Complex RoPE against the cos/sin formula, pair by pair, and the relative-position property."""
    torch.manual_seed(1)
    B, T, heads, D, theta = 2, 9, 3, 8, 10000.0
    x = torch.randn(B, T, heads, D, dtype=torch.float64)
    got = rope_interleaved(x, theta)
    expected = torch.empty_like(x)
    for t in range(T):
        for i in range(D // 2):
            angle = t * theta ** (-2.0 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            even, odd = x[:, t, :, 2 * i], x[:, t, :, 2 * i + 1]
            expected[:, t, :, 2 * i] = even * c - odd * s
            expected[:, t, :, 2 * i + 1] = even * s + odd * c
    check(max_diff(got, expected) < 1e-12, f"rope complex == cos/sin: max diff {max_diff(got, expected):.1e}")
    check(torch.equal(got[:, 0], x[:, 0]), "rope leaves position 0 unchanged")
    check(rope_interleaved(x.float(), theta).dtype == torch.float32, "rope keeps float32 inputs in float32")

    # <rope(q, m), rope(k, n)> depends only on m - n: put the same q and k at every position.
    q = torch.randn(1, 1, 1, D, dtype=torch.float64).expand(1, T, 1, D)
    k = torch.randn(1, 1, 1, D, dtype=torch.float64).expand(1, T, 1, D)
    rq, rk = rope_interleaved(q, theta)[0, :, 0], rope_interleaved(k, theta)[0, :, 0]  # [T, D]
    dots = rq @ rk.t()  # [T, T], entry (m, n)
    shift = max(max_diff(dots.diagonal(o)[1:], dots.diagonal(o)[:-1]) for o in range(-T + 2, T - 1))
    check(shift < 1e-12, f"rope scores depend only on the offset: max diff {shift:.1e}")


@torch.no_grad()
def check_mla_absorbed() -> None:
    """MLA's absorbed decoding formula (docs/mla.md, "Absorbed decoding") on the reference's weight layout equals
    its naive forward."""
    model = build(dict(FIXTURE_CONFIGS["mla"], n_layer=1))
    c = model.config
    attn = model.blocks[0].attn
    H, Dn, Dr, Dv, Dc = c.n_head, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
    B, T = 2, 10
    x = torch.randn(B, T, c.n_embd, dtype=torch.float64)

    q = attn.q_up(attn.q_norm(attn.q_down(x))).view(B, T, H, Dn + Dr)  # [B, T, H, Dn+Dr]
    q_nope, q_rope = q.split([Dn, Dr], dim=-1)  # [B, T, H, Dn], [B, T, H, Dr]
    kv = attn.kv_down(x)  # [B, T, Dc+Dr]
    c_kv = attn.kv_norm(kv[..., :Dc])  # [B, T, Dc]
    q_rope = rope_interleaved(q_rope, c.rope_theta)  # [B, T, H, Dr]
    k_rope = rope_interleaved(kv[..., Dc:].reshape(B, T, 1, Dr), c.rope_theta)[:, :, 0]  # [B, T, Dr]
    w = attn.kv_up.weight.view(H, Dn + Dv, Dc)  # [H, Dn+Dv, Dc]
    w_uk, w_uv = w[:, :Dn], w[:, Dn:]  # [H, Dn, Dc], [H, Dv, Dc]
    q_lat = torch.einsum("bthn,hnc->bthc", q_nope, w_uk)  # [B, T, H, Dc]
    scores = (torch.einsum("bthc,bsc->bhts", q_lat, c_kv)
              + torch.einsum("bthr,bsr->bhts", q_rope, k_rope)) / math.sqrt(Dn + Dr)  # [B, H, T, T]
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o_lat = torch.einsum("bhts,bsc->bthc", scores.softmax(-1), c_kv)  # [B, T, H, Dc]
    o = torch.einsum("bthc,hvc->bthv", o_lat, w_uv).reshape(B, T, H * Dv)  # [B, T, H*Dv]
    diff = max_diff(attn.o_proj(o), attn(x))
    check(diff < 1e-12, f"mla absorbed == naive: max diff {diff:.1e}")


@torch.no_grad()
def check_decoding() -> None:
    """Incremental decoding with the cache (the fixtures' chunk schedule; naive, and absorbed for MLA) gives the
    full forward's logits at every position, for every fixture config."""
    for name, values in FIXTURE_CONFIGS.items():
        model = build(values)
        c = model.config
        idx = torch.randint(0, c.vocab_size, (2, c.block_size))
        full, _ = model(idx)
        scale = full.abs().max().item()
        chunks = decode_chunks(c.block_size)
        for absorbed in (False, True) if c.attention == "mla" else (False,):
            diff = max_diff(decode(model, idx, chunks, absorbed), full) / scale
            label = "absorbed" if absorbed else "naive"
            check(diff < 1e-12, f"decoding {name} ({label}, chunks {chunks[:5]}+1s) == full forward: "
                                f"max rel diff {diff:.1e}")


@torch.no_grad()
def check_fixture_sensitivity() -> None:
    """The fixtures with non-default rope_theta and norm_eps only catch a model that ignores them if those values
    move the logits well beyond the C++ tolerance (1e-5): rerun the same weights with the defaults."""
    defaults = ModelConfig()
    for name in ("mla_distinct_theta", "gqa_distinct"):
        values = FIXTURE_CONFIGS[name]
        model = build(values)
        idx = torch.randint(0, model.config.vocab_size, (2, model.config.block_size))
        logits, _ = model(idx)
        for field in ("rope_theta", "norm_eps"):
            other = build(dict(values, **{field: getattr(defaults, field)}))
            other.load_state_dict(model.state_dict())
            moved = max_diff(other(idx)[0], logits) / logits.abs().max().item()
            check(values[field] != getattr(defaults, field) and moved > 1e-3,
                  f"{name}: {field} {values[field]} instead of {getattr(defaults, field)} moves the logits by "
                  f"{moved:.1e} (relative)")


def check_loss_and_grads() -> None:
    """The loss ignores targets == -1 and averages over the rest; every parameter gets a gradient."""
    for name in ("mha", "mha_gpt2", "mla", "mla_ropeless"):
        model = build(FIXTURE_CONFIGS[name])
        c = model.config
        idx = torch.randint(0, c.vocab_size, (2, 8))
        targets = torch.randint(0, c.vocab_size, (2, 8))
        targets[0, 1] = targets[1, 7] = -1
        logits, loss = model(idx, targets)
        keep = targets != -1
        logp = torch.log_softmax(logits, dim=-1)
        manual = -logp[keep].gather(1, targets[keep].unsqueeze(1)).mean()
        check(abs(loss.item() - manual.item()) < 1e-12, f"loss {name}: ignore_index -1 and mean over the rest")
        loss.backward()
        without = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        check(not without, f"grads {name}: every parameter has a nonzero gradient {without or ''}")


def check_fixtures(directory: Path) -> None:
    """Every fixture in `directory` reloads into the reference (config from its JSON, parameters from the file)
    and reproduces its own outputs, the decoded logits included; also prints how far a float32 run of the forward
    and backward lands, a guide for C++ tolerances."""
    import h5py

    files = sorted(directory.glob("*.h5"))
    check(bool(files), f"fixtures found in {directory}")
    for path in files:
        with h5py.File(path, "r") as f:
            version = int(f.attrs["version"])
            config = ModelConfig.from_dict(json.loads(f.attrs["config"]))
            params = {k: torch.from_numpy(v[()]) for k, v in f["params"].items()}
            idx, targets = torch.from_numpy(f["input/idx"][()]), torch.from_numpy(f["input/targets"][()])
            logits, loss = torch.from_numpy(f["output/logits"][()]), float(f["output/loss"][()])
            grads = {k: torch.from_numpy(v[()]) for k, v in f["grads"].items()}
            decode_idx = torch.from_numpy(f["decode/idx"][()])
            chunks = [int(n) for n in f["decode/chunks"][()]]
            decoded = {k: torch.from_numpy(v[()]) for k, v in f["decode"].items() if k.startswith("logits")}
        check(version == VERSION, f"fixture {path.name}: version {version} == {VERSION}")
        expected = {"logits", "logits_absorbed"} if config.attention == "mla" else {"logits"}
        check(set(decoded) == expected, f"fixture {path.name}: decoded logits {sorted(decoded)}")
        model = GPT(config)
        model.load_state_dict(params)  # strict: the file names exactly the model's parameters
        check(set(grads) == set(params), f"fixture {path.name}: one gradient per parameter")
        for dtype in (torch.float64, torch.float32):
            model.zero_grad(set_to_none=True)
            model = model.to(dtype)
            out, out_loss = model(idx, targets)
            out_loss.backward()
            logit_err = max_diff(out.float(), logits) / logits.abs().max().item()
            # Relative to each tensor's own scale, floored at 1e-3 of the largest gradient: some gradients are
            # zero in exact arithmetic (k_proj.bias: a per-query constant added to every score cancels in the
            # softmax), so both runs hold round-off there and only an absolute comparison makes sense.
            floor = 1e-3 * max(g.abs().max().item() for g in grads.values())
            grad_err = max(max_diff(p.grad.float(), grads[n]) / max(grads[n].abs().max().item(), floor)
                           for n, p in model.named_parameters())
            loss_err = abs(out_loss.item() - loss)
            label = f"fixture {path.name} rerun in {str(dtype).replace('torch.', '')}: max rel err logits " \
                    f"{logit_err:.1e}, grads {grad_err:.1e}, loss abs err {loss_err:.1e}"
            bound = 1e-6 if dtype == torch.float64 else 1e-4
            check(logit_err < bound and grad_err < bound and loss_err < bound, label)
            # Decoding in float64 only (it shows the stored numbers are the reference's; each decode is block_size
            # small steps, and gpt_reference_test prints how far float32 decoding lands).
            with torch.no_grad():
                for key, reference in decoded.items() if dtype == torch.float64 else ():
                    out = decode(model, decode_idx, chunks, absorbed=key == "logits_absorbed")
                    err = max_diff(out.float(), reference) / reference.abs().max().item()
                    check(err < bound, f"fixture {path.name} /decode/{key} rerun in "
                                       f"{str(dtype).replace('torch.', '')}: max rel err {err:.1e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, help="also reload and re-check the fixtures in this directory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    check_causality()
    check_gqa_equals_mha()
    check_rope()
    check_mla_absorbed()
    check_decoding()
    check_fixture_sensitivity()
    check_loss_and_grads()
    if args.fixtures:
        check_fixtures(args.fixtures)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all reference checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
