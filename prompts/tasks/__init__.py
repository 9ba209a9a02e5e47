"""Tasks as T5 text-to-text problems: specs, the GLUE/SuperGLUE catalogue, data, metrics.

Public API (light: no scikit-learn, no datasets at import):
- :class:`TaskSpec`, :class:`TaskError`, :class:`TaskInputError`, :data:`METRIC_NAMES`,
  :data:`SPLITS`, :func:`main_score` (THE main score: the mean of a task's metrics)
- :func:`parse_template` (THE check of an untrusted template), :class:`TemplateError`,
  :data:`MAX_TEMPLATE_CHARS`, :data:`MAX_FORMATTED_CHARS`
- :func:`get_task`, :func:`task_names`, :func:`load_task_file` (the built-in catalogue)

Submodules: :mod:`~spp.prompts.tasks.data` (``TaskData``, ``load_split``, ``load_splits``),
:mod:`~spp.prompts.tasks.sources` (files and the Hub), :mod:`~spp.prompts.tasks.metrics`
(``compute_metrics``).
"""

from spp.prompts.tasks.catalog import get_task, load_task_file, task_names
from spp.prompts.tasks.spec import (
    MAX_FORMATTED_CHARS,
    MAX_TEMPLATE_CHARS,
    METRIC_NAMES,
    SPLITS,
    FormattedTooLongError,
    TaskError,
    TaskInputError,
    TaskSpec,
    TemplateError,
    main_score,
    parse_template,
)

__all__ = [
    "MAX_FORMATTED_CHARS", "MAX_TEMPLATE_CHARS", "METRIC_NAMES", "SPLITS", "FormattedTooLongError", "TaskError",
    "TaskInputError", "TaskSpec", "TemplateError", "get_task", "load_task_file", "main_score", "parse_template",
    "task_names",
]
