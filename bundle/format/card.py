"""The model card: a README.md inside each bundle, generated from its manifest."""

from __future__ import annotations

import json
from typing import Any

from .manifest import Manifest
from .trust import PREDICT, decide, needed_for


def _rows(pairs: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in pairs]
    return "\n".join(lines)


def render_model_card(manifest: Manifest, schema: Any) -> str:
    """Markdown: name, version, metadata, input contract, steps, environment, how to load."""
    decision = decide(manifest)
    unsafe = {part.name for part in decision.unsafe}
    steps = [
        f"- {record['name']}: `{record['class']}` ({record['serializer']}"
        + (", needs trusted=True" if record["name"] in unsafe else "")
        + ")"
        for record in [*manifest.preprocess, *manifest.postprocess]
    ] or ["- (none)"]
    objects = [
        f"- `{o['name']}`: {o['kind']}, by {o['storage']} (`{o['module']}.{o['qualname']}`), "
        + ("needed to predict" if needed_for(o) == PREDICT else "compile only")
        + (", runs stored code: needs trusted=True" if o["name"] in unsafe else "")
        for o in manifest.custom_objects
    ] or ["- (none)"]
    # Compile-only parts are skipped without trust (a warning says so): only what
    # prediction needs makes the snippet pass trusted=True.
    trusted = ", trusted=True" if decision.refused else ""
    model = manifest.model
    signature = [
        f"- input `{t['name']}`: {t['dtype']} {tuple(t['shape'])}" for t in model["inputs"]
    ] + [f"- output `{t['name']}`: {t['dtype']} {tuple(t['shape'])}" for t in model["outputs"]]
    backend = manifest.backend
    if backend is not None:
        signature.append(
            f"- saved on Keras' `{backend['name']}` backend {backend.get('version') or ''}".rstrip()
            + "; it loads on any backend its layers run on"
        )
    return "\n".join(
        [
            f"# {manifest.name} {manifest.version}",
            "",
            f"A keras-bundle (format {manifest.format_version}) created {manifest.created}.",
            "",
            "## Load",
            "```python",
            "from bundle import Bundle",
            f'model = Bundle.load("path/to/{manifest.name}/{manifest.version}"{trusted})',
            "predictions = model.predict(raw_rows)",
            "```",
            "",
            "## Metadata",
            "```json",
            json.dumps(manifest.metadata, indent=2, sort_keys=True),
            "```",
            "",
            "## Input",
            "```",
            str(schema) if schema is not None else "(no input schema recorded)",
            "```",
            "",
            "## Model",
            *signature,
            "",
            "## Steps",
            *steps,
            "",
            "## Custom objects",
            *objects,
            "",
            "## Environment",
            _rows([(key, value or "-") for key, value in manifest.environment.items()]),
            "",
        ]
    )
