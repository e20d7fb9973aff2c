"""`pamfr watch` and `pamfr replay`: the file-drop and replay doors."""

from __future__ import annotations

import click


@click.command()
def watch() -> None:
    """Watch inbound folders for dropped HL7 files (not yet built)."""
    raise click.ClickException("not yet built")


@click.command()
def replay() -> None:
    """Replay message files (not yet built)."""
    raise click.ClickException("not yet built")
