"""The faulty fused-kernel backward (torch): check --grad fails it.

Forward: the log-sum-exp in float32, as fused kernels keep it. Backward: p = exp(x - lse) in
float32, then *stored in the logits' dtype* before the 1 is subtracted at the target: in
bfloat16, p_t = 0.999 rounds to 1 and the target entry p_t - 1 to 0 (100% error).
"""
import torch


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        x = logits.float()
        lse = torch.logsumexp(x, dim=1)
        ctx.save_for_backward(logits, lse, targets)
        return (lse - x.gather(1, targets[:, None])[:, 0]).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse, targets = ctx.saved_tensors
        p = torch.exp(logits.float() - lse[:, None]).to(logits.dtype)  # stored first
        g = p.float()
        g[torch.arange(len(targets)), targets] -= 1.0
        return (g * grad_out.float()[:, None]).to(logits.dtype), None


def cross_entropy(logits, targets):
    """Per-row cross entropy of `logits` (N, C) at `targets` (N,), in the logits' dtype."""
    return _CrossEntropy.apply(logits, targets)
