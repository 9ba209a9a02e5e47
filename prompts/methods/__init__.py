"""Soft-prompt methods: one module per method, one name -> method registry.

Public API:
- :class:`PromptMethod` (an ``nn.Module`` whose ``forward()`` returns the (n, e) prompt),
  :class:`MethodConfig` (fields carry their help text), :class:`InitContext`, :class:`ConfigError`
- :func:`get_method`, :func:`build_method`, :func:`method_names`, :func:`register`

Methods: ``simple`` (Lester 2021), ``superpos`` (SuperPos-Prompt), ``residual`` (Residual PT),
``ptuning`` (P-Tuning), ``ept`` (EPT), ``attempt`` (ATTEMPT); shared initialisation helpers in
:mod:`spp.prompts.methods.init`.
"""

from spp.prompts.methods.base import ConfigError, InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.registry import METHODS, build_method, get_method, method_names, register

__all__ = [
    "METHODS", "ConfigError", "InitContext", "MethodConfig", "PromptMethod",
    "build_method", "get_method", "method_names", "register",
]
