"""Hook implementations of sigerlm-serving (entry point ``serving``).

Adds the ``register_routes`` hook to the plugin contract so other plugins (Lampung) can
contribute routes without this plugin importing them.
"""

from __future__ import annotations

from sigerlm import hookimpl


@hookimpl
def add_hooks(plugin_manager):
    from sigerlm_serving.hookspecs import ServingSpecs

    plugin_manager.add_hookspecs(ServingSpecs)
