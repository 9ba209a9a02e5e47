"""spp.prompts: soft prompts for a frozen T5.

Subpackages, one concern each:
- :mod:`~spp.prompts.methods`: one module per prompt method and the name -> method registry
- :mod:`~spp.prompts.artifact`: the ``.safetensors`` file format, its one codec and schema
- :mod:`~spp.prompts.tasks`: task specs, the GLUE/SuperGLUE catalogue, data, metrics
- :mod:`~spp.prompts.train`: the training loop and the task -> artifact pipeline
- :mod:`~spp.prompts.transfer`: the zero-shot cross-task transfer evaluator
- :mod:`~spp.prompts.demo`: the offline demo

Modules: :mod:`~spp.prompts.backbone` (load and freeze a T5), :mod:`~spp.prompts.scoring`
(rank classification), :mod:`~spp.prompts.evaluate` (scores + metrics on a split),
:mod:`~spp.prompts.errors` (:class:`SppError`, the base of every user-facing error).

Importing this package imports nothing heavy; import the subpackage you need.
"""
