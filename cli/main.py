"""The `spp` command: each module of spp.cli registers its own commands or sub-app."""

from __future__ import annotations

import logging

import typer
from typer.core import TyperGroup

from spp.cli import common
from spp.prompts.errors import SppError


class _OneLineErrors(TyperGroup):
    """Every domain error (SppError) becomes one line on stderr and exit code 2, never a traceback.

    Done at the root group so that it covers every command and sub-app, and CliRunner tests see
    the same exit code and message as users.
    """

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SppError as exc:
            common.fail(str(exc))
        except FileNotFoundError as exc:
            common.fail(f"no such file: {exc.filename or exc}")


app = typer.Typer(
    name="spp",
    cls=_OneLineErrors,
    help="Soft prompts for a frozen T5: train, evaluate, publish, serve and transfer them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _register_all() -> None:
    # Each command module adds its commands; imports stay light (no model loading at import).
    from spp.cli import registry, serve, train, transfer

    for module in (train, registry, serve, transfer):
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
