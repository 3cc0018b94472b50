from pathlib import Path

pytest_plugins = ["sigerlm.testing"]

ROOT = Path(__file__).resolve().parents[1]
