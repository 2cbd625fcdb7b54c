"""``enrich postman``: write the Postman collection (and an environment) of the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import load_settings


def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def postman(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Collection file (default: print it)"),
    ] = None,
    environment_file: Annotated[
        Path | None,
        typer.Option(
            "--environment",
            "-e",
            help="Environment file (default with -o: next to the collection, "
            "NAME.postman_environment.json)",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="The service's base URL in the files [ENRICH_PUBLIC_URL]"),
    ] = None,
) -> None:
    """Write a Postman v2.1 collection of the API, with OAuth 2.0 client-credentials auth."""
    # start-up: the whole app (for its OpenAPI document) loads when the command runs.
    from app.main import create_app
    from app.qa.postman import collection, environment

    settings = load_settings()
    url = (base_url or settings.public_url).rstrip("/")
    spec = create_app(settings).openapi()
    document = collection(spec, url)
    if output is None:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    _write(output, document)
    env_path = environment_file or output.with_name(
        output.name.removesuffix(".json").removesuffix(".postman_collection")
        + ".postman_environment.json"
    )
    _write(env_path, environment(url))
    requests = sum(len(folder["item"]) for folder in document["item"])
    typer.echo(f"collection: {output} ({requests} requests)")
    typer.echo(f"environment: {env_path} (fill in client_id and client_secret)")
