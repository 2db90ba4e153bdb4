#!/usr/bin/env python3
"""Training throughput of mlagpt against PyTorch eager on the same model, weights, batches, dtype and threads.

For each model (the tiny_* configs of launch/configs, and nanoGPT's CPU character model: 4 layers, 128 wide,
block 64, batch 12, layernorm, gelu, learned positions) this script draws the initial weights and the
micro-batches once with the PyTorch reference of tests/reference/, writes them to a bench fixture (HDF5), and
trains that fixture in three implementations, each in its own process, alternating run by run so that load on
the machine falls on all alike:

  reference  tests/reference/gpt_reference.py as written (attention spelled out, RoPE in complex numbers) with
             torch.optim.AdamW(foreach=False), the arithmetic train_reference.py checks mlagpt against
  eager      the same modules with what a PyTorch user would reach for: F.scaled_dot_product_attention (enable_gqa
             for GQA/MQA), F.rms_norm, RoPE as a complex multiply by a cached table (Llama's),
             torch.optim.AdamW(fused=True)
  mlagpt     tests/bench/train_step_bench (the trainer's TrainStep over FlatAdamW, as `mlagpt train` steps)
  before     with --before BENCH, another train_step_bench (a build before a change), for its after / before ratio
  compiled   with --compile, the eager implementation under torch.compile (for a GPU run; slow to compile on a CPU)

The figure is tokens per second from the median step time after --warmup steps; the ratios are mlagpt's against
each PyTorch run. The losses of every run are compared step by step (they train the same model, so they agree to
float32 round-off); a disagreement beyond --loss-tolerance is an error (exit 1).

  tests/bench/torch_train_bench.py --bench build/ci/tests/bench/train_step_bench [--models tiny_mha,nanogpt_char]
      [--threads 1,2] [--steps 30] [--warmup 5] [--rounds 2] [--smoke]

--smoke shrinks every model's batch to 2 x 16 tokens and trains 3 steps: the CTest smoke test, not a timing.
--device cuda --dtype bfloat16 runs all of them on a GPU under bfloat16 autocast (mlagpt: run.dtype = bfloat16),
e.g. --models gpt2_small_mla --compile; any launch/configs name is a model (its own vocab_size, else 128).
Prints a table and one JSON line per model and thread count ({"bench": "train", ...}).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gpt_reference  # noqa: E402
from gpt_reference import GPT, ModelConfig  # noqa: E402
from train_reference import gets_weight_decay, learning_rate  # noqa: E402

FORMAT = "mlagpt.train_bench"
VOCAB = 128  # the default corpus at character level: 114 symbols, padded to a multiple of 64 as mlagpt does
IMPLS = ("reference", "eager", "mlagpt")

# nanoGPT's README "I only have a macbook" run of shakespeare_char: --block_size=64 --batch_size=12 --n_layer=4
# --n_head=4 --n_embd=128 --dropout=0.0, GPT-2's layernorm, gelu MLP and learned positions, bias=False (its config).
NANOGPT_CHAR = dict(attention="mha", block_size=64, n_layer=4, n_embd=128, n_head=4, norm="layernorm", mlp="gelu",
                    positions="learned", bias=False, tie_embeddings=True, dropout=0.0)
MODELS = ("tiny_mha", "tiny_gqa", "tiny_mqa", "tiny_mla", "nanogpt_char")


def model_setup(name: str) -> tuple[dict, int, int]:
    """(ModelConfig fields, batch size, sequence length) of a bench model."""
    if name == "nanogpt_char":
        return dict(NANOGPT_CHAR, vocab_size=VOCAB), 12, 64
    path = ROOT / "launch" / "configs" / f"{name}.toml"
    if not path.is_file():
        raise SystemExit(f"torch_train_bench: no model '{name}' (neither nanogpt_char nor {path})")
    config = tomllib.loads(path.read_text())
    known = {f for f in ModelConfig.__dataclass_fields__}
    unknown = sorted(set(config["model"]) - known)
    if unknown:
        raise SystemExit(f"torch_train_bench: {path}: [model] fields the reference does not have: {unknown}")
    model = dict(config["model"])
    model.setdefault("vocab_size", VOCAB)
    return model, config["data"]["batch_size"], config["data"]["seq_len"]


def write_fixture(path: Path, name: str, fields: dict, batch: int, seq_len: int, steps: int) -> None:
    import h5py
    import numpy as np

    config = ModelConfig.from_dict(fields)
    torch.manual_seed(1234)
    model = GPT(config)  # the reference's default initialization, normal(0, 0.02)
    generator = torch.Generator().manual_seed(99)
    x = torch.randint(0, config.vocab_size, (steps, batch, seq_len + 1), generator=generator)
    optim = dict(lr=1e-3, min_lr=1e-4, warmup_steps=2, decay_steps=steps, weight_decay=0.1, beta1=0.9, beta2=0.95,
                 eps=1e-8, grad_clip=1.0, grad_accum=1, steps=steps)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["name"] = name
        f.attrs["config"] = json.dumps(config.to_dict(), sort_keys=True)
        f.attrs["optim"] = json.dumps(optim, sort_keys=True)
        for key, value in model.state_dict().items():
            f.create_dataset(f"params_init/{key}", data=value.numpy())
        f.create_dataset("batches/x", data=x[:, :, :-1].numpy().astype(np.int64))
        f.create_dataset("batches/y", data=x[:, :, 1:].numpy().astype(np.int64))


# ---------------------------------------------------------------------------------------------------------------
# The "eager" implementation: the reference's modules and parameters, with the fast PyTorch ops in place of the
# written-out ones (training path only: no cache, so every sequence starts at position 0).

_rope_tables: dict = {}


def rope_cached(x: torch.Tensor, theta: float, start: int = 0) -> torch.Tensor:
    """Llama's RoPE: x's pairs as complex numbers times a cached cos + j sin table (float32/float64 x)."""
    if x.dtype not in (torch.float32, torch.float64):  # bfloat16 has no complex type: rotate in float32, as Llama
        return rope_cached(x.float(), theta, start).to(x.dtype)
    B, T, heads, D = x.shape
    key = (T, D, theta, start, x.dtype, x.device)
    if key not in _rope_tables:
        inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)
        angles = torch.outer(torch.arange(start, start + T, dtype=torch.float64, device=x.device), inv_freq)
        rotation = torch.complex(angles.cos().to(x.dtype), angles.sin().to(x.dtype))
        _rope_tables[key] = rotation.view(T, 1, D // 2)
    pairs = torch.view_as_complex(x.unflatten(-1, (D // 2, 2)).contiguous())
    return torch.view_as_real(pairs * _rope_tables[key]).flatten(-2)


def sdpa_attention(q, k, v, scale, dropout):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout.p if dropout.training else 0.0, is_causal=True,
                                          scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def rms_norm_forward(self, x):
    return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def gqa_forward(self, x, start=0, layer=None, absorbed=False):
    c = self.config
    B, T, _ = x.shape
    H, Hkv, Dh = c.n_head, c.n_kv_head, c.head_dim
    q = self.q_proj(x).view(B, T, H, Dh)
    k = self.k_proj(x).view(B, T, Hkv, Dh)
    v = self.v_proj(x).view(B, T, Hkv, Dh)
    if c.uses_rope:
        q, k = rope_cached(q, c.rope_theta), rope_cached(k, c.rope_theta)
    o = sdpa_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 1.0 / math.sqrt(Dh),
                       self.attn_dropout)
    return self.o_proj(o.transpose(1, 2).reshape(B, T, H * Dh))


def use_eager_ops() -> None:
    gpt_reference.rope_interleaved = rope_cached
    gpt_reference.causal_attention = sdpa_attention
    gpt_reference.RMSNorm.forward = rms_norm_forward
    gpt_reference.GroupedQueryAttention.forward = gqa_forward


def train_torch(fixture: Path, impl: str, threads: int, device: str, dtype: str) -> dict:
    import contextlib

    import h5py

    torch.set_num_threads(threads)
    if impl in ("eager", "compiled"):
        use_eager_ops()
    with h5py.File(fixture, "r") as f:
        config = ModelConfig.from_dict(json.loads(f.attrs["config"]))
        optim = json.loads(f.attrs["optim"])
        state = {key: torch.from_numpy(f[f"params_init/{key}"][()]) for key in f["params_init"]}
        xs, ys = torch.from_numpy(f["batches/x"][()]), torch.from_numpy(f["batches/y"][()])
    model = GPT(config)
    model.load_state_dict(state)
    model.to(device)
    model.train()
    xs, ys = xs.to(device), ys.to(device)
    forward = torch.compile(model) if impl == "compiled" else model
    autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
    decay = [p for n, p in model.named_parameters() if gets_weight_decay(n, p)]
    other = [p for n, p in model.named_parameters() if not gets_weight_decay(n, p)]
    groups = [{"params": decay, "weight_decay": optim["weight_decay"]}, {"params": other, "weight_decay": 0.0}]
    fast = dict(fused=True) if impl in ("eager", "compiled") else dict(foreach=False)
    optimizer = torch.optim.AdamW(groups, lr=optim["lr"], betas=(optim["beta1"], optim["beta2"]), eps=optim["eps"],
                                  **fast)
    parameters = list(model.parameters())
    seconds, losses = [], []
    for step in range(optim["steps"]):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            _, loss = forward(xs[step], ys[step])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, max_norm=optim["grad_clip"])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, optim)
        optimizer.step()
        losses.append(loss.item())
        seconds.append(time.perf_counter() - start)
    return {"impl": impl, "threads": threads, "step_seconds": seconds, "losses": losses}


# ---------------------------------------------------------------------------------------------------------------
# The driver


def run_impl(impl: str, fixture: Path, threads: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    where = ["--threads", str(threads), "--device", args.device, "--dtype", args.dtype]
    if impl in ("mlagpt", "before"):
        executable = args.bench if impl == "mlagpt" else args.before
        command = [str(executable), "--fixture", str(fixture)] + where
    else:
        command = [sys.executable, __file__, "--worker", impl, "--fixture", str(fixture)] + where
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"torch_train_bench: {impl} on {fixture.name} failed (exit {done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="the train_step_bench executable")
    parser.add_argument("--before", type=Path, help="a second train_step_bench to compare --bench with")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run, after the warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each implementation, alternated")
    parser.add_argument("--loss-tolerance", type=float,
                        help="largest relative difference of a step's loss between implementations (default 2e-3 in "
                             "float32, 3e-2 in bfloat16)")
    parser.add_argument("--smoke", action="store_true", help="batch 2 x 16 tokens, 3 steps: checks, not timings")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: autocast in every implementation")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the eager implementation")
    parser.add_argument("--worker", choices=("reference", "eager", "compiled"), help=argparse.SUPPRESS)
    parser.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(train_torch(args.fixture, args.worker, int(args.threads), args.device, args.dtype)))
        return 0
    if args.bench is None or not os.access(args.bench, os.X_OK):
        parser.error(f"--bench: not an executable: {args.bench}")
    if args.smoke:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    if args.loss_tolerance is None:
        args.loss_tolerance = 3e-2 if args.dtype == "bfloat16" else 2e-3
    if args.before is not None and not os.access(args.before, os.X_OK):
        parser.error(f"--before: not an executable: {args.before}")
    impls = IMPLS + (("compiled",) if args.compile else ()) + (("before",) if args.before else ())
    threads = [int(t) for t in args.threads.split(",")]
    status = 0
    print(f"{'model':14s} {'thr':>3s} {'reference':>10s} {'eager':>10s} {'mlagpt':>10s} {'vs ref':>7s} "
          f"{'vs eager':>8s}{'  before  after/before' if args.before else ''}  (tokens/s; median step after "
          f"{args.warmup} warm-up steps)")
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            fields, batch, seq_len = model_setup(name)
            if args.smoke:
                batch, seq_len = 2, 16
            fixture = Path(work) / f"{name}.h5"
            write_fixture(fixture, name, fields, batch, seq_len, args.warmup + args.steps)
            for n in threads:
                runs: dict[str, list[dict]] = {impl: [] for impl in impls}
                for r in range(args.rounds):
                    order = impls[r % len(impls):] + impls[:r % len(impls)]
                    for impl in order:
                        runs[impl].append(run_impl(impl, fixture, n, args))
                rate = {}
                for impl, results in runs.items():
                    timed = [s for result in results for s in result["step_seconds"][args.warmup:]]
                    rate[impl] = batch * seq_len / statistics.median(timed)
                worst = 0.0
                base = runs["reference"][0]["losses"]
                for results in runs.values():
                    for result in results:
                        for a, b in zip(result["losses"], base):
                            worst = max(worst, abs(a - b) / abs(b))
                if worst > args.loss_tolerance:
                    print(f"torch_train_bench: {name}: the implementations' losses differ by {worst:.2e} (relative) "
                          f"> {args.loss_tolerance}: they did not train the same model", file=sys.stderr)
                    status = 1
                vs_ref, vs_eager = rate["mlagpt"] / rate["reference"], rate["mlagpt"] / rate["eager"]
                extra = f" {rate['before']:8.0f} {rate['mlagpt'] / rate['before']:13.3f}" if args.before else ""
                if args.compile:
                    extra += f"  compiled {rate['compiled']:.0f}, mlagpt / compiled {rate['mlagpt'] / rate['compiled']:.3f}"
                print(f"{name:14s} {n:3d} {rate['reference']:10.0f} {rate['eager']:10.0f} {rate['mlagpt']:10.0f} "
                      f"{vs_ref:7.3f} {vs_eager:8.3f}{extra}")
                print(json.dumps({"bench": "train", "model": name, "threads": n, "batch": batch, "seq_len": seq_len,
                                  "tokens_per_second": {k: round(v, 1) for k, v in rate.items()},
                                  "mlagpt_vs_reference": round(vs_ref, 4), "mlagpt_vs_eager": round(vs_eager, 4),
                                  "loss_max_relative_difference": worst, "torch": torch.__version__,
                                  "device": args.device, "dtype": args.dtype, "smoke": args.smoke}))
                sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
