"""A child process that runs torch's F.cross_entropy under one ATen CPU kernel.

ATen picks its vectorised CPU kernels (DEFAULT, AVX2, AVX512) once, when torch is imported,
from the CPU and the environment variable ATEN_CPU_CAPABILITY; so each kernel runs in a
process of its own, started by `precision_lab.analysis.implementations` with that variable
set. Run as a script (`python aten_worker.py`), it imports only numpy and torch, and speaks a
length-prefixed pickle protocol on the file descriptors it is given:

  ("probe",)                               -> torch.backends.cpu.get_cpu_capability()
  ("ce", dtype, x float64, t int64, red)   -> F.cross_entropy(x in dtype, t, reduction=red)
                                              as float64 (the values are exact in dtype)
  ("grad", dtype, x, t, red)               -> its gradient dL/dx by autograd, in dtype, as
                                              float64 ((N, C); for "none" each row's own)
  ("exit",)                                -> the process ends
Every reply is ("ok", value) or ("error", message).
"""
from __future__ import annotations

import os
import pickle
import struct
import sys

__all__ = ["send", "receive", "serve"]


def send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the ATen worker closed its pipe")
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _cross_entropy(torch, dtype: str, x, t, reduction: str):
    xt = torch.from_numpy(x).to(getattr(torch, dtype))
    tt = torch.from_numpy(t)
    out = torch.nn.functional.cross_entropy(xt, tt, reduction=reduction)
    return out.to(torch.float64).numpy()


def _grad(torch, dtype: str, x, t, reduction: str):
    xt = torch.from_numpy(x).to(getattr(torch, dtype)).requires_grad_(True)
    out = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction=reduction)
    out.sum().backward()  # rows are independent: the sum's gradient is each row's own
    return xt.grad.to(torch.float64).numpy()


def serve(rfd: int, wfd: int) -> None:
    import torch  # the kernel is chosen here, from ATEN_CPU_CAPABILITY

    torch.set_num_threads(1)
    with os.fdopen(rfd, "rb") as rin, os.fdopen(wfd, "wb") as wout:
        while True:
            try:
                msg = receive(rin)
            except EOFError:
                return
            try:
                if msg[0] == "exit":
                    return
                if msg[0] == "probe":
                    reply = ("ok", torch.backends.cpu.get_cpu_capability())
                elif msg[0] == "ce":
                    reply = ("ok", _cross_entropy(torch, *msg[1:]))
                elif msg[0] == "grad":
                    reply = ("ok", _grad(torch, *msg[1:]))
                else:
                    reply = ("error", f"unknown request {msg[0]!r}")
            except Exception as exc:  # the caller raises it, naming the kernel
                reply = ("error", f"{type(exc).__name__}: {exc}")
            send(wout, reply)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
