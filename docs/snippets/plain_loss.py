import torch

from rl.advantages import group_advantages
from rl.losses import policy_loss

torch.manual_seed(0)
B, T, V = 8, 16, 50                                    # 2 prompts x 4 samples, 16 response tokens
logits = torch.randn(B, T, V, requires_grad=True)      # stands in for your model's output
tokens = torch.randint(0, V, (B, T))                   # the sampled response tokens
logp = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)   # [B, T]
old_logp = logp.detach() + 0.01 * torch.randn(B, T)    # log-probs under the sampling policy
mask = torch.arange(T) < torch.randint(4, T + 1, (B, 1))                  # False after EOS
advantages = group_advantages(torch.rand(B), group_size=4)               # [B]

loss, metrics = policy_loss(
    logp, old_logp, advantages, mask,
    level="sequence", p=-1.0,                          # harmonic mean of token ratios: HMPO (p=0: GSPO)
    eps_low=3e-4, eps_high=4e-4,                       # GSPO's sequence-level clip window
)
loss.backward()
print(f"loss {loss.item():+.4f}  clipped {metrics['clip_frac']:.2f}  p {metrics['p']:g}")
