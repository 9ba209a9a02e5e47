"""The `spp` command: every command and sub-app is wired here, in one visible list.

Each command lives in the module of its group (train, registry, sharing, serve, transfer) and
imports heavy libraries (torch, transformers) only inside its body, so that `spp --help` and
the registry commands start fast. `spp train` and `spp methods` add their method flags, which
are generated from the method config fields, only when they run (see spp.cli.method_flags).
"""

from __future__ import annotations

import logging

import typer
from typer.core import TyperGroup

from spp.cli import common, registry, serve, sharing, sweep, train, transfer
from spp.cli.method_flags import MethodFlagsCommand
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

# Training and evaluation (spp.cli.train)
app.command("train", cls=MethodFlagsCommand)(train.train_cmd)
app.command("eval")(train.eval_cmd)
app.command("methods", cls=MethodFlagsCommand)(train.methods_cmd)
app.command("tasks")(train.tasks_cmd)
app.command("demo")(train.demo_cmd)

# The registry (spp.cli.registry)
app.command("publish")(registry.publish_cmd)
app.command("list")(registry.list_cmd)
app.command("show")(registry.show_cmd)
alias_app = typer.Typer(help="Move or remove aliases such as rte@prod.", no_args_is_help=True)
alias_app.command("set")(registry.alias_set_cmd)
alias_app.command("rm")(registry.alias_rm_cmd)
app.add_typer(alias_app, name="alias")
app.command("tag")(registry.tag_cmd)
app.command("deprecate")(registry.deprecate_cmd)
app.command("rm")(registry.rm_cmd)
app.command("verify")(registry.verify_cmd)
app.command("gc")(registry.gc_cmd)
registry_app = typer.Typer(help="Registry administration: schema migrations, copies, rebuilding a lost index.",
                           no_args_is_help=True)
registry_app.command("migrate")(registry.migrate_cmd)
registry_app.command("copy")(registry.copy_cmd)
registry_app.command("rebuild-index")(registry.rebuild_index_cmd)
app.add_typer(registry_app, name="registry")

# Sharing: Hub repos and PEFT adapters (spp.cli.sharing)
app.command("push")(sharing.push_cmd)
app.command("pull")(sharing.pull_cmd)
app.command("export")(sharing.export_cmd)
app.command("import-peft")(sharing.import_peft_cmd)

# Serving and cross-task transfer (spp.cli.serve, spp.cli.transfer)
app.command("serve")(serve.serve_cmd)
app.command("transfer")(transfer.transfer_cmd)

# Sweeps on Ray Tune and paper-style reports (spp.cli.sweep)
app.command("sweep")(sweep.sweep_cmd)
app.command("report")(sweep.report_cmd)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
