"""``flask`` commands: users, start-up chores."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from models.users import ROLES
from services import reference_data, users

users_cli = AppGroup("users", help="Manage user accounts.")


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(ROLES), default="customer", show_default=True)
@click.option("--full-name", default="", help="Defaults to the part of the email before @.")
def create_user(email: str, password: str, role: str, full_name: str) -> None:
    """Create a user with any role."""
    if len(password) < 8:
        raise click.BadParameter("at least 8 characters", param_hint="--password")
    user = users.create_user(email, password, full_name or email.split("@")[0], role=role)
    click.echo(f"created {user.role} {user.email} ({user.id})")


@users_cli.command("ensure-admin")
def ensure_admin() -> None:
    """Make sure CARHUB_ADMIN_EMAIL / CARHUB_ADMIN_PASSWORD exist as an admin (no-op if unset)."""
    email, password = current_app.config["CARHUB_ADMIN_EMAIL"], current_app.config["CARHUB_ADMIN_PASSWORD"]
    if not email or not password:
        click.echo("CARHUB_ADMIN_EMAIL / CARHUB_ADMIN_PASSWORD not set; no admin ensured")
        return
    user = users.ensure_admin(email, password)
    click.echo(f"admin {user.email} is ready")


@click.command("seed")
def seed() -> None:
    """Insert the rows that exist from the start (idempotent)."""
    reference_data.seed()
    click.echo("reference data is in place")


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(seed)
    from messaging.cli import COMMANDS as MESSAGING_COMMANDS  # topology, dead-letters

    for command in MESSAGING_COMMANDS:
        app.cli.add_command(command)
