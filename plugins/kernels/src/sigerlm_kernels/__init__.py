"""sigerlm-kernels: SigerLM's compiled CPU kernels, and the ``fused`` scan back-end built on them.

Importing this package registers ``scan: fused`` (core's default) with core; the back-end
(``sigerlm_kernels.backend``, which imports torch) is imported when a block first uses it. The
kernels themselves (``sigerlm_kernels.kernels``) are compiled on first use. Loaded as the
plugin ``kernels``, it also adds ``siger kernels``.
"""

from sigerlm.model.config import register_scan

register_scan("fused", "sigerlm_kernels.backend:FUSED")
