from pathlib import Path

pytest_plugins = ["sigerlm_testkit"]

ROOT = Path(__file__).resolve().parents[1]
