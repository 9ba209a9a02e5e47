"""Training: the loop over a frozen backbone, and the pipeline from a task to an artifact.

Public API:
- :class:`TrainConfig`, :class:`TrainEvent`, :class:`TrainResult`, :func:`train`,
  :func:`build_prompt_method` (:mod:`~spp.prompts.train.trainer`)
- :func:`train_to_artifact`, :func:`evaluate_artifact`, :func:`method_options`,
  :func:`method_param_counts` (:mod:`~spp.prompts.train.pipeline`)
"""

from spp.prompts.train.pipeline import evaluate_artifact, method_options, method_param_counts, train_to_artifact
from spp.prompts.train.trainer import TrainConfig, TrainEvent, TrainResult, build_prompt_method, train

__all__ = [
    "TrainConfig", "TrainEvent", "TrainResult", "build_prompt_method", "evaluate_artifact",
    "method_options", "method_param_counts", "train", "train_to_artifact",
]
