"""registry/schema/manifest.schema.json is generated from the manifest model and kept current."""

import json
from pathlib import Path

from sigerlm.manifest import manifest_json_schema

SCHEMA = Path(__file__).resolve().parents[1] / "registry" / "schema" / "manifest.schema.json"


def test_schema_file_is_current():
    stored = json.loads(SCHEMA.read_text())
    assert stored == manifest_json_schema(), (
        "registry/schema/manifest.schema.json is stale: regenerate it with "
        "`siger manifest-schema --out registry/schema/manifest.schema.json`"
    )


def test_example_manifests_match_the_schema_shape():
    import yaml

    schema = manifest_json_schema()
    for path in (SCHEMA.parents[1] / "manifests").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert set(data) <= set(schema["properties"]), path
        assert set(schema["required"]) <= set(data), path
