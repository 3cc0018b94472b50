"""Hook implementations of sigerlm-serving (entry point ``serving``).

Adds the ``register_routes`` hook to the plugin contract so other plugins (Lampung) can
contribute routes without this plugin importing them, adds this plugin's own /v1 API through
that hook, and the ``siger serve`` and ``siger serving ...`` commands. Keep it light: fastapi
and torch are imported inside the functions.
"""

from __future__ import annotations

from sigerlm import hookimpl


@hookimpl
def add_hooks(plugin_manager):
    from sigerlm_serving.hookspecs import ServingSpecs

    plugin_manager.add_hookspecs(ServingSpecs)


@hookimpl
def register_routes(router, app_state):
    from sigerlm_serving.routes import add_routes

    add_routes(router, app_state)


@hookimpl
def register_commands(cli):
    from sigerlm_serving.cli import serve_command, serving_app

    cli.command("serve")(serve_command)
    cli.add_typer(serving_app, name="serving")
