"""SigerLM: small selective state-space language models on ordinary CPUs.

Importing ``sigerlm`` is cheap (no torch): it gives the hook markers for plugins and the
version. The backbone lives in ``sigerlm.model``, the loader in ``sigerlm.plugins``, the
manifest in ``sigerlm.manifest``.
"""

from importlib.metadata import PackageNotFoundError, version

from sigerlm.hookspecs import hookimpl, hookspec

try:
    __version__ = version("sigerlm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl", "hookspec"]
