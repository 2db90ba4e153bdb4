#!/usr/bin/env python3
"""Writes the training-parity fixture the C++ trainer must match: train_reference.py --out FILE.

A short, fully deterministic float32 training run of the reference GPT (gpt_reference.py, the `mla` named config
of make_fixtures.py) with torch.optim.AdamW, recording everything the C++ trainer needs to repeat it: the initial
parameters, every micro-batch, the per-step loss, gradient norm and learning rate, and the final parameters.

The optimizer rules are written here from the rules stated in trainer/optimizer.h, trainer/train_config.h and
trainer/train_step.h (which parameters decay, the nanoGPT schedule, clipping by global norm, gradient
accumulation), not from the C++ code, so a misreading in one implementation shows up as a parity failure.
Layout: see README.md. Runs in a few seconds on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_reference import GPT, ModelConfig  # noqa: E402
from make_fixtures import FIXTURE_CONFIGS, FIXTURE_SEED, INIT_STD, perturb_for_testing  # noqa: E402

FORMAT = "mlagpt.train_reference"
VERSION = 1
CONFIG_NAME = "mla"
MODEL_SEED = FIXTURE_SEED  # 1234: same initial parameters as the mla.h5 model fixture
DATA_SEED = 99

# Run shape: STEPS optimizer steps of GRAD_ACCUM micro-batches of BATCH sequences of SEQ_LEN tokens.
STEPS = 20
GRAD_ACCUM = 2
BATCH = 4
SEQ_LEN = 12  # < block_size (16) on purpose

# Optimizer and schedule settings; stored verbatim as the `optim` attribute (keys named as in OptimConfig and
# ScheduleConfig of trainer/train_config.h, plus `steps`).
OPTIM = {
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_steps": 5,
    "decay_steps": 20,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "grad_clip": 1.0,
    "grad_accum": GRAD_ACCUM,
    "steps": STEPS,
}


def learning_rate(step: int, o: dict = OPTIM) -> float:
    """nanoGPT's schedule for optimizer step `step` (0-based).

    Linear warmup: step s < warmup_steps gets lr * (s + 1) / warmup_steps (so step 0 already has a nonzero rate);
    then a half cosine from lr down to min_lr, reaching min_lr at s == decay_steps; min_lr from there on.
    """
    lr, min_lr, warmup, decay = o["lr"], o["min_lr"], o["warmup_steps"], o["decay_steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= decay:
        return min_lr
    progress = (step - warmup) / (decay - warmup)  # in [0, 1); decay > warmup here since warmup <= step < decay
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def gets_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Decay matrices (dim >= 2) except the embedding tables wte and wpe.

    That leaves every Linear weight, lm_head included when untied; norm weights and biases (1-D) and the
    embeddings get none.
    """
    is_embedding = name.startswith("wte.") or name.startswith("wpe.")
    return param.dim() >= 2 and not is_embedding


def build_model() -> GPT:
    """The mla reference model with make_fixtures.py's initialization (std 0.1 weights, perturbed norms)."""
    config = ModelConfig.from_dict(dict(FIXTURE_CONFIGS[CONFIG_NAME], dropout=0.0))
    torch.manual_seed(MODEL_SEED)
    model = GPT(config)
    model.reset_parameters(INIT_STD)
    perturb_for_testing(model)
    return model


def make_batches(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All STEPS * GRAD_ACCUM micro-batches, int64 [STEPS * GRAD_ACCUM, BATCH, SEQ_LEN] each.

    x is uniform over the vocabulary; y is x shifted left by one token along T (the next-token target) with a
    freshly drawn last token. Micro-batch k = step * GRAD_ACCUM + m is micro-batch m of optimizer step `step`.
    """
    generator = torch.Generator().manual_seed(DATA_SEED)
    shape = (STEPS * GRAD_ACCUM, BATCH, SEQ_LEN)
    x = torch.randint(0, vocab_size, shape, generator=generator, dtype=torch.int64)
    last = torch.randint(0, vocab_size, shape[:2] + (1,), generator=generator, dtype=torch.int64)
    y = torch.cat([x[:, :, 1:], last], dim=2)
    return x, y


def make_optimizer(model: GPT) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over two groups: decayed matrices, and everything else at weight decay 0."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if gets_weight_decay(name, param) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": OPTIM["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # foreach=False: the plain per-parameter loop, the same arithmetic as LibTorch's AdamW.
    return torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"],
                             foreach=False)


def snapshot(model: GPT) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train() -> dict:
    torch.set_default_dtype(torch.float32)
    model = build_model()
    model.train()  # dropout is 0, so train() and eval() compute the same thing
    vocab = model.config.vocab_size
    params_init = snapshot(model)
    x, y = make_batches(vocab)
    optimizer = make_optimizer(model)
    parameters = [p for p in model.parameters()]

    losses, grad_norms, lrs = [], [], []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(GRAD_ACCUM):
            k = step * GRAD_ACCUM + micro
            logits, _ = model(x[k])  # [B, T, V]
            # Mean over the micro-batch's tokens, divided by grad_accum so the accumulated gradient is the
            # gradient of the mean over all grad_accum micro-batches.
            loss = F.cross_entropy(logits.view(-1, vocab), y[k].view(-1), ignore_index=-1) / GRAD_ACCUM
            loss.backward()
            step_loss += loss.item()
        # Clip by the global L2 norm over all parameters; the recorded norm is the one before clipping.
        total_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm=OPTIM["grad_clip"])
        lr = learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        losses.append(step_loss)
        grad_norms.append(float(total_norm))
        lrs.append(lr)

    return dict(config=model.config, params_init=params_init, params_final=snapshot(model), x=x, y=y,
                losses=losses, grad_norms=grad_norms, lrs=lrs)


def write_fixture(path: Path, run: dict) -> None:
    import h5py
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = np.int64(VERSION)
            f.attrs["config"] = json.dumps(run["config"].to_dict(), sort_keys=True)
            f.attrs["optim"] = json.dumps(OPTIM, sort_keys=True)
            # Provenance only.
            f.attrs["name"] = CONFIG_NAME
            f.attrs["seed"] = np.int64(MODEL_SEED)
            f.attrs["data_seed"] = np.int64(DATA_SEED)
            f.attrs["torch_version"] = str(torch.__version__)
            for group in ("params_init", "params_final"):
                for key, value in run[group].items():
                    f.create_dataset(f"{group}/{key}", data=value.to(torch.float32).numpy())
            f.create_dataset("batches/x", data=run["x"].numpy().astype(np.int64))
            f.create_dataset("batches/y", data=run["y"].numpy().astype(np.int64))
            f.create_dataset("losses", data=np.asarray(run["losses"], dtype=np.float64))
            f.create_dataset("grad_norms", data=np.asarray(run["grad_norms"], dtype=np.float64))
            f.create_dataset("lrs", data=np.asarray(run["lrs"], dtype=np.float64))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader never sees a half-written fixture
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the HDF5 file to write")
    args = parser.parse_args(argv)

    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(args.out.parent, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on '{args.out.parent}'")
        if args.out.is_dir():
            raise IsADirectoryError(f"'{args.out}' is a directory")
    except OSError as error:
        print(f"train_reference: cannot write '{args.out}': {error}", file=sys.stderr)
        return 2

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    start = time.perf_counter()
    run = train()
    elapsed = time.perf_counter() - start

    print("step        lr        loss   grad_norm")
    for step, (lr, loss, norm) in enumerate(zip(run["lrs"], run["losses"], run["grad_norms"])):
        print(f"{step:4d}  {lr:.6f}  {loss:10.6f}  {norm:10.6f}")
    print(f"trained {STEPS} steps in {elapsed:.2f} s")

    # Sanity: the run must learn something. Compare the means of the first and last quarter, which is robust to
    # one noisy step, and also require the last loss to be below the first.
    quarter = STEPS // 4
    first, last = sum(run["losses"][:quarter]) / quarter, sum(run["losses"][-quarter:]) / quarter
    if not (last < first and run["losses"][-1] < run["losses"][0]):
        print(f"train_reference: the loss did not fall (first {quarter} steps mean {first:.6f}, last {quarter} "
              f"mean {last:.6f}; step 0 {run['losses'][0]:.6f}, last step {run['losses'][-1]:.6f})",
              file=sys.stderr)
        return 1

    try:
        write_fixture(args.out, run)
    except OSError as error:
        print(f"train_reference: cannot write '{args.out}': {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
