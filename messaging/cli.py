"""``flask topology declare|export`` and ``flask dead-letters list|replay``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from messaging import deadletters, topology

topology_cli = AppGroup("topology", help="RabbitMQ exchanges, queues and bindings.")
dead_letters_cli = AppGroup("dead-letters", help="Messages that could not be applied.")

DEFAULT_DEFINITIONS = Path(__file__).resolve().parent.parent / "deploy" / "rabbitmq" / "definitions.json"


@topology_cli.command("declare")
def declare() -> None:
    """Declare the topology on RABBITMQ_URL (idempotent; run on every start)."""
    url = current_app.config["RABBITMQ_URL"]
    if not url:
        raise click.ClickException("RABBITMQ_URL is not set (embedded mode needs no topology)")
    topology.declare_url(url)
    click.echo(f"declared {len(topology.queues())} queues and {len(topology.exchanges())} exchanges")


@topology_cli.command("export")
@click.option("--vhost", default="/", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DEFINITIONS)
@click.option("--user", default="carhub", show_default=True, help="User the file defines ('' for none).")
@click.option("--password", default="carhub", show_default=True, help="Its password (stored salted and hashed).")
def export(vhost: str, output: Path, user: str, password: str) -> None:
    """Write definitions.json for RabbitMQ's load_definitions (compose)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(topology.definitions(vhost, user or None, password), indent=2) + "\n")
    click.echo(f"wrote {output}")


@dead_letters_cli.command("list")
@click.option("--queue", default=None, help="Only dead letters from this queue.")
@click.option("--limit", default=50, show_default=True)
def list_dead_letters(queue: str | None, limit: int) -> None:
    """Newest first: id, queue, routing key, attempts, reason."""
    items, total = deadletters.list_dead_letters(1, limit, queue)
    for letter in items:
        replayed = f" (replayed {letter.replayed_at:%Y-%m-%d %H:%M:%S})" if letter.replayed_at else ""
        click.echo(
            f"{letter.id}  {letter.queue}  {letter.routing_key}  attempts={letter.attempts}  {letter.reason}{replayed}"
        )
    click.echo(f"{total} dead letter(s)")


@dead_letters_cli.command("replay")
@click.argument("dead_letter_id")
def replay(dead_letter_id: str) -> None:
    """Send one dead letter to its queue again (through the outbox and the relay)."""
    try:
        letter = deadletters.replay(dead_letter_id)
    except deadletters.DeadLetterNotFound as exc:
        raise click.ClickException(f"no dead letter {dead_letter_id}") from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"replaying {letter.id} to {letter.queue} as {letter.routing_key}")


COMMANDS = (topology_cli, dead_letters_cli)
