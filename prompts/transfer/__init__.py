"""Zero-shot cross-task transfer: every source prompt on every target task.

Public API:
- :func:`compute_transfer`, :class:`TransferSource`, :class:`TransferConfig`,
  :class:`TransferResult`, :class:`TransferError`, :func:`load_target`, :func:`resolve_task`,
  :func:`check_sources` (:mod:`~spp.prompts.transfer.compute`)
- :func:`mean_cosine`, :func:`token_cosine`, :func:`similarity_matrices`
  (:mod:`~spp.prompts.transfer.similarity`, SPoT)
- :func:`rank_by_similarity`, :func:`train_probe` (:mod:`~spp.prompts.transfer.recommend`)
- :func:`write_report` and the JSON schema (:mod:`~spp.prompts.transfer.report`)
"""

from spp.prompts.transfer.compute import (
    TransferConfig,
    TransferError,
    TransferResult,
    TransferSource,
    check_sources,
    compute_transfer,
    load_target,
    resolve_task,
)
from spp.prompts.transfer.recommend import Recommendation, rank_by_similarity, train_probe
from spp.prompts.transfer.report import write_report
from spp.prompts.transfer.similarity import SIMILARITIES, mean_cosine, similarity_matrices, token_cosine

__all__ = [
    "SIMILARITIES", "Recommendation", "TransferConfig", "TransferError", "TransferResult", "TransferSource",
    "check_sources", "compute_transfer", "load_target", "mean_cosine", "rank_by_similarity", "resolve_task",
    "similarity_matrices", "token_cosine", "train_probe", "write_report",
]
