"""Integration tests run tiny models: one intra-op thread each.

With several threads per process on a shared 2-core machine, every 32-wide matmul of the tiny
Llama waits on busy cores (measured: 27 s for two TRL steps with the default threads, 1.8 s with
one). The previous setting is restored after each test.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
