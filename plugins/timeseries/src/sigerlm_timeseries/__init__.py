"""sigerlm-timeseries: time series as a SigerLM modality (adapter ``series``, datasets ``ucr``
and ``csv``, evaluators, streaming). Built on core's public contract only."""

__version__ = "0.1.0"
