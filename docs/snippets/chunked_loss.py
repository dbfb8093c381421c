import torch

from rl.losses import chunked_policy_loss
from rl.losses.chunked import chunked_logprobs

torch.manual_seed(0)
B, T, H, V = 4, 64, 32, 1000                           # 4 responses of 64 tokens, hidden size 32, 1000 token ids
hidden = torch.randn(B, T, H, requires_grad=True)      # your model's last hidden states (t predicts tokens[:, t])
lm_head = torch.nn.Linear(H, V, bias=False)            # your model's output layer
tokens = torch.randint(0, V, (B, T))                   # the sampled response tokens
mask = torch.arange(T) < torch.randint(8, T + 1, (B, 1))                  # False after EOS
with torch.no_grad():                                  # log-probs under the sampling policy (here: perturbed)
    old_logp = chunked_logprobs(hidden, lm_head.weight, tokens, mask)[0] + 1e-3 * torch.randn(B, T)
advantages = torch.tensor([1.0, -0.5, 0.8, -0.2])

loss, metrics = chunked_policy_loss(
    hidden, lm_head.weight, tokens, old_logp, advantages, mask,
    level="sequence", p=-1.0, eps_low=3e-4, eps_high=4e-4,   # every option of policy_loss: here HMPO
    chunk_size=64,                                     # logits alive at a time: [64, V], never [B, T, V]
    entropy=True,                                      # the entropy metric, from the same chunks
)
loss.backward()                                        # gradients reach hidden and lm_head.weight
print(f"loss {loss.item():+.4f}  clipped {metrics['clip_frac']:.2f}  entropy {metrics['entropy']:.3f}")
