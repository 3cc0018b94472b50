"""sigerlm-lampung: Offline Lampung (dialect O / Nyo, `abl`) <-> Indonesian <-> English translation: datasets, lookup, a learned translator, routing and evaluation."""
