"""Shared test settings. One intra-op thread: the models in tests are tiny, and on a 2-core
machine extra threads cost more in synchronisation than they gain (5-8x slower measured)."""
import torch

torch.set_num_threads(1)
