"""`bundle pack`: a bundle from a model file, pickled steps and an example file."""

from __future__ import annotations

import json

import click

import bundle as api

from ..errors import UsageError
from .app import CONTEXT_SETTINGS, cli


def _metadata(pairs: tuple[str, ...]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        try:
            values[key] = json.loads(text)  # numbers, booleans, JSON; else the text itself
        except ValueError:
            values[key] = text
    return values


def _postprocess(items: tuple[str, ...]) -> list[str] | dict[str, str]:
    """``FILE`` (one output) or ``OUTPUT=FILE`` (per output), not both."""
    keyed = [item.partition("=") for item in items if "=" in item and not item.startswith("=")]
    if not keyed:
        return list(items)
    if len(keyed) != len(items):
        raise UsageError(
            "--postprocess takes FILE for a model with one output, or OUTPUT=FILE for each "
            "output of a model with several; not both."
        )
    return {name: path for name, _, path in keyed}


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Build a bundle from a model file, pickled steps and an example.",
)
@click.argument("root")
@click.option(
    "--model",
    "model",
    required=True,
    metavar="FILE",
    help="The Keras model: a .keras file or a legacy .h5 file.",
)
@click.option(
    "--preprocess",
    multiple=True,
    metavar="FILE",
    help="A joblib or pickle file of a fitted preprocessing step (repeat, in replay order).",
)
@click.option(
    "--postprocess",
    multiple=True,
    metavar="[OUTPUT=]FILE",
    help="A joblib or pickle file of a postprocess step (a LabelEncoder, a target scaler); "
    "OUTPUT=FILE for one output of a model with several.",
)
@click.option(
    "--example",
    metavar="FILE",
    default=None,
    help="Example input rows: Parquet, CSV or JSON Lines (or a .npy array). The first 1000 "
    "are stored with their outputs; the whole file is profiled for drift.",
)
@click.option("--name", default=None, help="The bundle's name (default: the model file's).")
@click.option("--version", "version", default=None, help="The version to save as.")
@click.option(
    "--custom-object",
    "custom_objects",
    multiple=True,
    metavar="MODULE:NAME",
    help="A custom layer, loss or function the model file needs, as an import path.",
)
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="A fact to keep (repeat).")
@click.option(
    "--inference-only",
    is_flag=True,
    help="Leave the optimizer's state out (include_optimizer=False): a smaller bundle.",
)
@click.option("--overwrite", is_flag=True, help="Replace the version if it exists.")
def pack(
    root: str,
    model: str,
    preprocess: tuple[str, ...],
    postprocess: tuple[str, ...],
    example: str | None,
    name: str | None,
    version: str | None,
    custom_objects: tuple[str, ...],
    metadata: tuple[str, ...],
    inference_only: bool,
    overwrite: bool,
) -> None:
    """Build a bundle under ROOT from the files of an existing release, without retraining.

    The model file, the pickled steps and the example are loaded, the example is run
    through them, and the bundle is saved and proven to load like any save. Unpickling runs
    code: pack only files you made or trust (the ones unpickled are listed). The bundle
    stores the steps without pickle where it can, so loading it needs no trust then.
    """
    packed = api.pack(
        root,
        model=model,
        preprocess=preprocess,
        postprocess=_postprocess(postprocess),
        example=example,
        name=name,
        version=version,
        custom_objects=custom_objects,
        metadata=_metadata(metadata),
        include_optimizer=not inference_only,
        overwrite=overwrite,
    )
    if packed.unpickled:
        click.echo(
            f"Unpickled {len(packed.unpickled)} file(s), trusted as yours (unpickling runs "
            f"code): {', '.join(packed.unpickled)}",
            err=True,
        )
    click.echo(f"Packed {packed.label} into {packed.location}")
