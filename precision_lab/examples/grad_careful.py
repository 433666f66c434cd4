"""A careful cross entropy with its own backward (torch): check --grad passes it.

Forward and backward in float64 whatever the logits' dtype. The gradient: e_i = exp(x_i - a) with
a the row maximum (x_i - a with its rounding error recovered by TwoSum and applied to first
order, since exp turns an absolute error in its argument into a relative one), p_i = e_i / S,
and the target
entry -(sum of the other e_i) / S: 1 - p_t as a sum, never as 1 minus a rounded p_t. It is
rounded once, to the logits' dtype.
"""
import torch


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        x = logits.double()
        ctx.save_for_backward(x, targets)
        ctx.dtype = logits.dtype
        return (torch.logsumexp(x, dim=1) - x.gather(1, targets[:, None])[:, 0]).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, targets = ctx.saved_tensors
        a = x.max(dim=1, keepdim=True).values
        d = x - a                                 # rounded; err: what rounding took (TwoSum)
        bb = d - x
        err = torch.nan_to_num((x - (d - bb)) + (-a - bb), nan=0.0)  # masked -inf: exp = 0
        e = torch.exp(d)
        e = e + e * err                           # exp(d + err) to first order: exp(x - a)
        s = e.sum(dim=1, keepdim=True)
        rows = torch.arange(len(targets))
        e[rows, targets] = 0.0
        e[rows, targets] = -e.sum(dim=1)
        return (e / s * grad_out.double()[:, None]).to(ctx.dtype), None


def cross_entropy(logits, targets):
    """Per-row cross entropy of `logits` (N, C) at `targets` (N,), in the logits' dtype."""
    return _CrossEntropy.apply(logits, targets)
