"""``spp demo``: a tiny T5 pretrained on two instruction-prefixed toy tasks, then frozen, and a
prompt trained for each task without the instruction.

Public API: :func:`run_demo` (:mod:`~spp.prompts.demo.run`); :func:`make_tiny_backbone_dir`,
:func:`write_demo_task`, :data:`TASKS` (:mod:`~spp.prompts.demo.toy`, also used by the tests).
"""

from spp.prompts.demo.run import run_demo
from spp.prompts.demo.toy import TASKS, make_tiny_backbone_dir, write_demo_task

__all__ = ["TASKS", "make_tiny_backbone_dir", "run_demo", "write_demo_task"]
