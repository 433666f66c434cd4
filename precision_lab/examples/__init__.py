"""Cross-entropy implementations to run `precision-lab check` on.

  blog:cross_entropy       the blog post "Cross Entropy from Scratch!" (numpy, float64 in the post):
                           max-shifted softmax, then the batch mean of -log(p_t + 1e-7)
  qa:cross_entropy         the manual loop of the Stack Overflow answer (torch): the batch mean
                           of -log(exp(x[i, t_i]) / exp(x[i]).sum()), no shift, no epsilon
  unshifted:cross_entropy  a broken one: softmax without the shift, per-row -log p_t (numpy)
  stable:cross_entropy     a correct one: per-row log-sum-exp minus the target logit (numpy)
  grad_careful:cross_entropy      for `check --grad`: a torch loss whose backward sums 1 - p_t
                                  from the other probabilities, in float64 (passes)
  grad_store_first:cross_entropy  for `check --grad`: the fused kernel that stores the softmax
                                  in the logits' dtype before subtracting 1 (fails)

Each takes (logits, targets) and keeps the dtype of the logits it is given, so the checker can
run it in float16, bfloat16, float32 and float64.
"""
