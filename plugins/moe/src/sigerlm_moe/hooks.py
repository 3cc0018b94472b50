"""Hook implementations of sigerlm-moe (entry point ``moe``).

Keep this module light: it is imported by every ``siger`` call. The ``moe`` block registers
here once it lands; its module imports torch inside the factory.
"""
