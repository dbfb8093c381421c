"""The policy protocol's helpers: left-padding masks, input and rollout checks, and the one-table
log-prob/entropy gather, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rl.policies.base import (
    Rollout, check_lm_inputs, check_rollout, check_temperature, gather_logp_entropy, prompt_mask,
)


def test_prompt_mask_starts_at_each_rows_first_real_token():
    pad = 9
    prompts = torch.tensor([[9, 9, 1, 2], [1, 9, 2, 3], [9, 9, 9, 9]])  # a pad id after a real token is real
    assert prompt_mask(prompts, pad).tolist() == [[False, False, True, True], [True] * 4, [False] * 4]


def test_gather_logp_entropy_of_a_two_token_table():
    # row 0: p = (1/2, 1/4, 1/4), H = 1.5 log 2; row 1: uniform over 3, H = log 3; position 1 is padding
    table = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64))
    tokens = torch.tensor([[1, 10**6]])  # padding may hold any id
    mask = torch.tensor([[True, False]])
    lp, ent = gather_logp_entropy(table, tokens, mask)
    assert lp.tolist() == [[math.log(0.25), 0.0]]
    assert ent[0, 0].item() == pytest.approx(1.5 * math.log(2), rel=1e-15) and ent[0, 1].item() == 0.0


def test_bad_inputs_and_rollouts_raise_value_errors():
    with pytest.raises(ValueError, match="Owner needs prompts"):
        check_lm_inputs("Owner", torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        check_lm_inputs("Owner", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="do not match"):
        check_lm_inputs("Owner", torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long),
                        torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        check_lm_inputs("Owner", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
                        torch.ones(2, 1))
    for bad in (0.0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="temperature"):
            check_temperature(bad)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    ok = Rollout(None, tokens, torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3))
    check_rollout(ok)
    with pytest.raises(ValueError, match="detached"):
        check_rollout(Rollout(None, tokens, ok.mask, torch.zeros(2, 3, requires_grad=True)))
    with pytest.raises(ValueError, match="shapes differ"):
        check_rollout(Rollout(None, tokens, ok.mask[:, :2], ok.logp))
    with pytest.raises(ValueError, match="rows"):
        check_rollout(Rollout(torch.zeros(3, 1, dtype=torch.long), tokens, ok.mask, ok.logp))
