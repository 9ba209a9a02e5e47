"""Method flags generated from the method config fields (`spp train`, `spp methods`).

Every prompt method's config dataclass declares its fields with
:func:`spp.prompts.config.option` (help text, bounds, choices on the field). The flags are the
union of those fields over all registered methods, one flag per field name:

- ``n_tokens`` -> ``--n-tokens``; a bool field ``softmax`` -> ``--softmax/--no-softmax``;
- the help names each method that has the field, with its help text and default
  (``residual: Hidden width of the residual MLP. [128]; attempt: Width of ... [100]``);
- int, float and str fields keep their type (the method's config checks the value); a field of
  another type, or of different types in different methods, takes JSON like ``--option``;
- a field declared with ``option(..., cli=False)`` gets no flag (``--option`` still reaches it);
- a flag left unset means "the method's default": only the flags given reach the method.

A command opts in by taking ``**method_options`` (marked with :func:`takes_method_flags`) and
being wired with ``cls=MethodFlagsCommand``. Generating the flags imports the method registry
and so torch, which costs seconds: the command adds them the first time its parameters are
needed (parsing its arguments, its ``--help``), so `spp --help` and every other command start
without torch. Each run of the app generates them afresh from the registry as it is then.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperCommand

PANEL = "Method options (see `spp methods`)"
TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
# Extra off-switches kept for compatibility: `--per-token` is `--no-shared`.
EXTRA_OFF: dict[str, str] = {"shared": "--per-token"}


@dataclasses.dataclass(frozen=True)
class MethodFlag:
    """One generated flag: the config field ``name`` of one or more methods."""

    name: str
    kind: str  # int, float, str, bool, or json (parsed like --option)
    help: str

    def parameter(self) -> inspect.Parameter:
        """A keyword parameter Typer turns into this flag (default None: the method's default)."""
        flag = "--" + self.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if self.kind == "bool" else [flag]
        if self.kind == "bool" and self.name in EXTRA_OFF:
            decls.append(" /" + EXTRA_OFF[self.name])  # click: an off-switch with no on-switch
        info = typer.Option(*decls, help=self.help, rich_help_panel=PANEL, show_default=False)
        annotation = Annotated[Optional[TYPES.get(self.kind, str)], info]  # type: ignore[misc]
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def method_flags() -> list[MethodFlag]:
    """The flags of every registered method's config fields, in order of first appearance."""
    from spp.prompts.methods import get_method, method_names

    uses: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for method in method_names():
        for f in dataclasses.fields(get_method(method).config_cls):
            if f.metadata.get("cli", True):
                uses.setdefault(f.name, []).append((method, f))
    return [_flag(name, fields) for name, fields in uses.items()]


def _flag(name: str, uses: list[tuple[str, dataclasses.Field]]) -> MethodFlag:
    from spp.prompts.config import base_type

    kinds = {base_type(f)[0] for _, f in uses}
    kind = kinds.pop() if len(kinds) == 1 else "json"
    kind = kind if kind in TYPES else "json"
    texts: dict[str, list[str]] = {}  # help text -> the methods that share it
    for method, f in uses:
        texts.setdefault(_field_text(f, kind), []).append(method)
    help_text = "; ".join(f"{', '.join(methods)}: {text}" for text, methods in texts.items())
    return MethodFlag(name, kind, help_text)


def _field_text(f: dataclasses.Field, kind: str) -> str:
    """A field's help with its choices and default, escaped for rich markup."""
    from rich.markup import escape

    from spp.prompts.config import field_help

    text = field_help(f).strip() or f.name.replace("_", " ")
    if f.metadata.get("choices"):
        text += f" One of: {', '.join(f.metadata['choices'])}."
    default = _default(f)
    if default is not None:
        flag = f.name.replace("_", "-")
        shown = (f"--{flag}" if default else f"--no-{flag}") if kind == "bool" else json.dumps(default, default=str).strip('"')
        text += f" [{shown}]"
    return escape(text)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses (8, 0.5, true, [1, 2]), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def takes_method_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a command ``func(..., **method_options)``: until its flags are generated, Typer sees
    its signature without ``**method_options`` (Typer cannot read a ``**`` parameter)."""
    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(own) == len(sig.parameters):
        raise TypeError(f"{func.__name__} must take **method_options")
    func.__signature__ = sig.replace(parameters=own)  # type: ignore[attr-defined]
    return func


def with_method_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with one keyword parameter per method flag; the flags given reach ``func`` as
    ``**method_options``, the ones left unset do not."""
    own = inspect.signature(func)  # without **method_options (see takes_method_flags)
    flags = method_flags()
    clash = sorted({f.name for f in flags} & set(own.parameters))
    if clash:
        raise TypeError(f"method config field(s) {', '.join(clash)} clash with options of {func.__name__}")
    parse = {f.name: parse_value if f.kind == "json" else (lambda v: v) for f in flags}

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        flag_values = {name: kwargs.pop(name, None) for name in parse}
        given = {name: parse[name](value) for name, value in flag_values.items() if value is not None}
        return func(**kwargs, **given)

    params = [*own.parameters.values(), *(f.parameter() for f in flags)]
    command.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


class MethodFlagsCommand(TyperCommand):
    """A Typer command whose method flags are generated when its parameters are first needed.

    At CLI start Typer builds every command from its function's signature, for `spp --help` too;
    this one is built without the method flags and completes itself (parameters and callback,
    through Typer's own builder) on its first ``get_params``: argument parsing, help, completion.
    """

    _complete = False

    def get_params(self, ctx: Any) -> list[Any]:
        if not self._complete:
            self._add_method_flags()
        return super().get_params(ctx)

    def _add_method_flags(self) -> None:
        from typer.main import get_command_from_info
        from typer.models import CommandInfo

        func = self.callback.__wrapped__  # type: ignore[union-attr]  # Typer's wrapper wraps the function
        info = CommandInfo(name=self.name, callback=with_method_flags(func))
        full = get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode)
        self.params, self.callback = full.params, full.callback
        self._complete = True
