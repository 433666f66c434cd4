"""The blog post's implementation ("Cross Entropy from Scratch!", nishantbhansali.com), in numpy.

A max-shifted softmax, then the batch mean of -log(p_t + epsilon) with epsilon = 1e-7. The
epsilon keeps log away from 0, so the loss of one row can never exceed -log(1e-7) = 16.12, and
it biases every loss down by log1p(epsilon / p_t).
"""
import numpy as np


def softmax(predictions):
    exp_preds = np.exp(predictions - np.max(predictions, axis=1, keepdims=True))
    return exp_preds / np.sum(exp_preds, axis=1, keepdims=True)


def cross_entropy(predictions, targets, epsilon=1e-7):
    """Mean cross entropy of logits `predictions` (N, C) at integer `targets` (N,)."""
    probs = softmax(predictions)
    n = predictions.shape[0]
    return np.sum(-np.log(probs[np.arange(n), targets] + epsilon)) / n
