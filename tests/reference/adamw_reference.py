#!/usr/bin/env python3
"""Writes the optimizer-parity fixture: adamw_reference.py --out FILE.

Twenty steps of torch.optim.AdamW (the plain single-tensor implementation: foreach=False, fused=False, float32) on
a few parameters of unrelated shapes in two groups (weight decay 0.1 and none), fed gradients drawn here, at a
learning rate that changes every step. The C++ optimizer (trainer/parallel/flat_adamw.h), fed the same gradients,
must end at the same parameters and moments. Written from the AdamW rules of the PyTorch documentation, not from
the C++ code. Layout of FILE (HDF5): attributes format, settings (JSON: the hyperparameters, and the parameters in
order with shape and group), /init/<name>, /grads/<step>/<name>, /lrs [steps], /final/<name>, /exp_avg/<name>, /exp_avg_sq/<name>.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

FORMAT = "mlagpt.adamw_reference"
STEPS = 20
SETTINGS = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "steps": STEPS}
# name -> (shape, decays): no two dimensions alike, groups interleaved as a model's are.
PARAMETERS = {
    "blocks.0.attn.q_proj.weight": ((24, 40), True),
    "blocks.0.norm1.weight": ((40,), False),
    "wte.weight": ((37, 40), False),
    "blocks.0.mlp.fc.weight": ((3, 56, 5), True),
    "blocks.0.mlp.fc.bias": ((56,), False),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(2024)
    params = {name: torch.randn(shape, generator=generator) * 0.5 for name, (shape, _) in PARAMETERS.items()}
    for p in params.values():
        p.requires_grad_(True)
    decay = [params[n] for n, (_, d) in PARAMETERS.items() if d]
    no_decay = [params[n] for n, (_, d) in PARAMETERS.items() if not d]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": SETTINGS["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(SETTINGS["beta1"], SETTINGS["beta2"]), eps=SETTINGS["eps"], foreach=False, fused=False)
    lrs = [3e-3 * (0.5 + 0.5 * np.cos(np.pi * s / STEPS)) + 1e-4 for s in range(STEPS)]
    try:
        out = h5py.File(args.out, "w")
    except OSError as error:
        print(f"adamw_reference.py: cannot write {args.out}: {error}", file=sys.stderr)
        return 2
    with out:
        out.attrs["format"] = FORMAT
        parameters = [{"name": n, "shape": list(shape), "decay": d} for n, (shape, d) in PARAMETERS.items()]
        out.attrs["settings"] = json.dumps({**SETTINGS, "parameters": parameters})
        for name, p in params.items():
            out.create_dataset(f"init/{name}", data=p.detach().numpy())
        for step in range(STEPS):
            for group in optimizer.param_groups:
                group["lr"] = lrs[step]
            # Gradients of a different scale every step, so that the moments' bias correction matters.
            scale = 10.0 ** ((step % 5) - 2)
            for name, p in params.items():
                p.grad = torch.randn(p.shape, generator=generator) * scale
                out.create_dataset(f"grads/{step}/{name}", data=p.grad.numpy())
            optimizer.step()
        out.create_dataset("lrs", data=np.array(lrs, dtype=np.float64))
        for name, p in params.items():
            state = optimizer.state[p]
            out.create_dataset(f"final/{name}", data=p.detach().numpy())
            out.create_dataset(f"exp_avg/{name}", data=state["exp_avg"].numpy())
            out.create_dataset(f"exp_avg_sq/{name}", data=state["exp_avg_sq"].numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main())
