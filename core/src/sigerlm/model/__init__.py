"""The backbone's configuration (torch-free) and, in later modules, the model itself."""

from sigerlm.model.config import PROFILES, SigerConfig

__all__ = ["PROFILES", "SigerConfig"]
