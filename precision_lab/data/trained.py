"""Real logits: a small classifier trained with torch on scikit-learn's bundled digits data.

`train_digits` trains a multilayer perceptron (64 -> hidden -> hidden -> 10, ReLU) on a fixed
split of `sklearn.datasets.load_digits` (1797 8x8 images, bundled with scikit-learn: nothing is
downloaded), full-batch Adam without weight decay or label smoothing, for as many epochs as the
latest snapshot asks, and returns the held-out logits at each requested epoch: small and
nearly uniform at initialisation, growing as the training loss is driven towards zero, until
the model is over-confident (large logit gaps, a held-out loss dominated by a few confidently
wrong rows). Deterministic: one torch thread, a seeded generator, float32 throughout; the
same seed gives the same logits bit for bit on the same machine.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Snapshot", "train_digits", "write_digits_logits", "DIGITS_FILE_EPOCHS"]

DIGITS_FILE_EPOCHS = (0, 10, 100, 1000, 3000)   # untrained, learning, fitted, over-confident


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    logits: np.ndarray        # (N, 10) float64 carrying the model's float32 outputs
    targets: np.ndarray       # (N,) int64
    train_loss: float         # float32 mean cross entropy on the training split
    test_accuracy: float
    max_abs_logit: float


def train_digits(epochs=(0, 10, 100, 1000), seed: int = 0, hidden: int = 128,
                 lr: float = 1e-2, test_fraction: float = 0.3,
                 logit_scale: float = 1.0) -> list[Snapshot]:
    """Train on the digits data and return a `Snapshot` of the held-out logits at each epoch
    in `epochs` (0 is the untrained model; one epoch is one full-batch Adam step).

    logit_scale multiplies the network's output (a temperature of 1/logit_scale, fixed during
    training); 1 is the plain model.
    """
    import torch
    from sklearn.datasets import load_digits

    epochs = sorted({int(e) for e in epochs})
    if not epochs or epochs[0] < 0:
        raise ValueError(f"epochs must be non-negative integers, got {epochs}")
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        layers = [torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                  torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                  torch.nn.Linear(hidden, 10)]
        model = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for layer in layers:
                if isinstance(layer, torch.nn.Linear):
                    bound = 1.0 / np.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    layer.bias.uniform_(-bound, bound, generator=gen)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        xtr, ytr = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        xte = torch.from_numpy(x[test])
        snaps = []
        for epoch in range(epochs[-1] + 1):
            if epoch in epochs:
                with torch.no_grad():
                    # the training loss of the model as it is now (after `epoch` steps)
                    now = torch.nn.functional.cross_entropy(logit_scale * model(xtr), ytr)
                    out = (logit_scale * model(xte)).to(torch.float64).numpy()
                    acc = float((out.argmax(axis=1) == y[test]).mean())
                    snaps.append(Snapshot(epoch, out, y[test].copy(), float(now), acc,
                                          float(np.abs(out).max())))
            if epoch == epochs[-1]:
                break
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logit_scale * model(xtr), ytr)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return snaps


def write_digits_logits(path, epochs=DIGITS_FILE_EPOCHS, seed: int = 0, hidden: int = 128) -> Path:
    """A file of real classifier logits for `precision-lab analyze`: the held-out logits of
    `train_digits(epochs, seed, hidden)` at each epoch, stacked (rows epoch by epoch, the
    held-out images at each), as a .npz of `logits` (the model's float32
    outputs, kept in float32), `targets` and `epoch` (each row's epoch). Returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"the logits file must end in .npz, got {path.name!r}")
    snaps = train_digits(epochs=epochs, seed=seed, hidden=hidden)
    carried = np.concatenate([s.logits for s in snaps])
    logits = carried.astype(np.float32)
    if not np.array_equal(logits.astype(np.float64), carried):
        raise ArithmeticError("the model's logits are not float32 values")   # cannot happen
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=logits, targets=np.concatenate([s.targets for s in snaps]),
             epoch=np.concatenate([np.full(len(s.targets), s.epoch) for s in snaps]))
    return path


def main(argv=None) -> int:
    """`python -m precision_lab.data.trained OUT.npz`: write `write_digits_logits`' file."""
    p = argparse.ArgumentParser(prog="python -m precision_lab.data.trained",
                                description=write_digits_logits.__doc__.split("\n\n")[0])
    p.add_argument("out", help="the .npz file to write")
    p.add_argument("--epochs", type=int, nargs="+", default=list(DIGITS_FILE_EPOCHS))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:   # the file's suffix and the epochs, checked before any training
        path = write_digits_logits(a.out, tuple(a.epochs), a.seed)
    except ValueError as exc:
        p.error(str(exc))
    with np.load(path) as f:
        print(f"wrote {path}: {f['logits'].shape[0]} x {f['logits'].shape[1]} logits "
              f"(float32), epochs {sorted(set(f['epoch'].tolist()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
