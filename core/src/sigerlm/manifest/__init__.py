"""The manifest: one YAML or JSON file that describes a whole run.

- ``sigerlm.manifest.schema``: the format (pydantic models, ``InputPath``, ``component_ref``,
  the JSON schema);
- ``sigerlm.manifest.source``: reading a file with the line of every key, ``--set``, variables;
- ``sigerlm.manifest.resolve``: finding every component and validating its options, collecting
  every problem with the file, line, path and fix before any work starts.
"""

from sigerlm.manifest.resolve import (
    ResolvedComponent,
    ResolvedManifest,
    load_manifest,
    parse_manifest,
    place_blocks,
    resolve,
)
from sigerlm.manifest.schema import (
    ComponentSpec,
    InitFrom,
    InputPath,
    Manifest,
    OutputPath,
    component_ref,
    manifest_json_schema,
)
from sigerlm.manifest.source import ManifestSource, apply_overrides, format_path, parse_path, read_manifest

__all__ = [
    "ComponentSpec",
    "InitFrom",
    "InputPath",
    "Manifest",
    "OutputPath",
    "ManifestSource",
    "ResolvedComponent",
    "ResolvedManifest",
    "apply_overrides",
    "component_ref",
    "format_path",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "parse_path",
    "place_blocks",
    "read_manifest",
    "resolve",
]
