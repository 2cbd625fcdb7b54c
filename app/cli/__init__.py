"""The ``enrich`` command line (Typer), assembled from one module per command group.

Each module loads the service's code when one of its commands runs, not when ``enrich``
starts, so that ``enrich --version`` and ``enrich --help`` answer at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app import __version__
from app.cli import audit, clients, data, keys, migrate, personalize, purge, qa, serve, views

app = typer.Typer(
    help="enrich: real-time profile enrichment for Sitecore Personalize.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# In the order ``enrich --help`` lists them (the groups come after the commands).
app.command()(qa.postman)
app.command()(serve.serve)
app.command()(migrate.migrate)
app.command("import")(data.import_)
app.command()(data.demo)
app.command()(audit.audit)
app.command()(purge.purge)
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(views.app, name="views")
clients.app.command("view")(views.client_view)  # (the clients module is full)
clients.app.command("purpose")(views.client_purpose)
app.add_typer(personalize.app, name="personalize")


def _print_version(value: bool) -> None:
    if value:
        print(f"enrich {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """enrich: real-time profile enrichment for Sitecore Personalize."""
    del version  # --version is eager: its callback printed it and exited
    # start-up: the audit log (and SQLAlchemy under it) loads only when a command runs.
    from app.audit.log import cli_actor, current_actor

    current_actor.set(cli_actor())  # changes made from the command line are audited as its user


def main() -> None:
    app()


if __name__ == "__main__":
    main()
