"""sigerlm-lampung: Offline Lampung (dialect O / Nyo, `abl`) <-> Indonesian <-> English translation.

Datasets, lookup, a learned translator, routing and evaluation.
"""

__version__ = "0.1.0"
