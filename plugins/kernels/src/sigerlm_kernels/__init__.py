"""sigerlm-kernels: SigerLM's compiled CPU kernels, and the ``fused`` scan back-end built on them.

The distribution names ``fused = "sigerlm_kernels.backend:FUSED"`` in the entry-point group
``sigerlm.scans``, so core's ``scan: fused`` (the default) finds it in any process where it is
installed; the back-end (which imports torch) is imported when a block first uses it, and the
kernels themselves (``sigerlm_kernels.kernels``) are compiled on first use. Loaded as the plugin
``kernels``, it adds ``siger kernels``.
"""
