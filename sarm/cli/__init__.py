"""The `sarm` command: one typer app, one sub-app per area."""

import typer

from sarm.cli.data import data_app
from sarm.cli.embed import embed
from sarm.cli.evaluate import eval_command
from sarm.cli.export import export_command
from sarm.cli.import_lerobot import import_app
from sarm.cli.rabc import rabc_command
from sarm.cli.serve import CONTEXT, serve_command
from sarm.cli.train import train_command

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SARM stage-aware reward models.")
app.add_typer(data_app, name="data")
app.add_typer(import_app, name="import")
app.command()(embed)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("export")(export_command)
app.command("serve", context_settings=CONTEXT)(serve_command)
app.command("rabc")(rabc_command)
