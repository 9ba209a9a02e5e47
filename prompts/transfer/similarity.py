"""SPoT prompt similarities (Vu et al., ACL 2022, arXiv:2110.07904, section 5).

* ``mean_cosine(a, b)``: cosine of the mean prompt tokens, ``cos(mean_i a_i, mean_j b_j)``;
* ``token_cosine(a, b)``: SPoT's per-token average cosine, the mean of the cosine of every
  token pair, ``1 / (n_a n_b) * sum_ij cos(a_i, b_j)``. Averaging over all pairs (not the
  min(n) aligned tokens) keeps it defined for prompts of different lengths and independent of
  token order; note that it is below 1 for a prompt with itself unless all its tokens point
  the same way.
"""

from __future__ import annotations

from typing import Sequence

import torch

SIMILARITIES = ("mean_cosine", "token_cosine")


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """SPoT: cosine of the mean prompt tokens. a: (n_a, e), b: (n_b, e)."""
    ma, mb = a.double().mean(dim=0), b.double().mean(dim=0)  # (e,), (e,)
    return float(torch.nn.functional.cosine_similarity(ma, mb, dim=0))


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """SPoT: mean cosine over all n_a x n_b token pairs (defined for any two lengths)."""
    na = torch.nn.functional.normalize(a.double(), dim=1)  # (n_a, e)
    nb = torch.nn.functional.normalize(b.double(), dim=1)  # (n_b, e)
    return float((na @ nb.T).mean())  # mean of the (n_a, n_b) cosine matrix


def similarity_matrices(prompts: Sequence[torch.Tensor]) -> dict[str, list[list[float]]]:
    """Both SPoT similarities between every pair of prompts: name -> (S, S)."""
    fns = {"mean_cosine": mean_cosine, "token_cosine": token_cosine}
    return {name: [[fn(a, b) for b in prompts] for a in prompts] for name, fn in fns.items()}
