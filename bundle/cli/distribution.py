"""`bundle sign`, `bundle push` and `bundle pull`: releases that travel and prove their origin."""

from __future__ import annotations

from typing import Any

import click

import bundle as api

from ..format.digest import digest_of
from ..format.layout import SIGNATURE_FILE
from ..format.manifest import read_manifest
from ..storage import is_oci
from .app import CONTEXT_SETTINGS, DIGEST_OPTION, VERSION_OPTION, cli
from .reading import _read_manifest_at


# ---------------------------------------------------------------------------- sign
@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Sign a bundle version (OpenSSF model_signing format).",
)
@click.argument("path")
@VERSION_OPTION
@click.option(
    "--key",
    metavar="PEM",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The elliptic-curve private key to sign with (P-256, P-384 or P-521, PEM).",
)
@click.option(
    "--certificate",
    metavar="PEM",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Sign with this certificate for KEY (its chain: --certificate-chain).",
)
@click.option(
    "--certificate-chain",
    metavar="PEM",
    type=click.Path(exists=True, dir_okay=False),
    multiple=True,
    help="Intermediate certificates between --certificate and the root (repeatable).",
)
def sign(
    path: str,
    version: str | None,
    key: str,
    certificate: str | None,
    certificate_chain: tuple[str, ...],
) -> None:
    """Sign the bundle version at PATH: writes PATH/model.sig.

    The signature is the OpenSSF model_signing format (a Sigstore bundle over every file's
    sha256), so `model_signing verify key PATH --signature PATH/model.sig --public_key
    KEY.pub` verifies it, as do `bundle verify PATH --public-key KEY.pub` and
    Bundle.load(PATH, public_key=...). Archives and `bundle push` carry it along.
    """
    written = api.sign(
        path,
        key=key,
        version=version,
        certificate=certificate,
        certificate_chain=certificate_chain,
    )
    label = read_manifest(written.parent).label
    click.echo(f"Signed {label} (digest {digest_of(written.parent)}): {written}")


# ---------------------------------------------------------------------------- push / pull
def registry_options(command: Any) -> Any:
    """--username, --password-stdin and --plain-http for commands that talk to a registry."""
    for option in reversed(
        [
            click.option(
                "--username",
                metavar="USER",
                default=None,
                help="Registry user (default: the Docker config or "
                "$KERAS_BUNDLE_REGISTRY_USERNAME).",
            ),
            click.option(
                "--password-stdin",
                is_flag=True,
                help="Read the registry password (or token) from standard input.",
            ),
            click.option(
                "--plain-http",
                is_flag=True,
                help="Speak plain HTTP to a registry that is not on this machine (unsafe).",
            ),
        ]
    ):
        command = option(command)
    return command


def _registry_kwargs(username: str | None, password_stdin: bool, plain_http: bool) -> dict:
    options: dict[str, Any] = {}
    if username is not None:
        options["username"] = username
    if password_stdin:
        options["password"] = click.get_text_stream("stdin").read().rstrip("\r\n")
    if plain_http:
        options["plain_http"] = True
    return options


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Push a bundle version to an OCI registry (with its signature).",
)
@click.argument("path")
@click.argument("target")
@VERSION_OPTION
@registry_options
def push(
    path: str,
    target: str,
    version: str | None,
    username: str | None,
    password_stdin: bool,
    plain_http: bool,
) -> None:
    """Push the bundle version at PATH to TARGET, oci://HOST[:PORT]/REPOSITORY[:TAG]
    (default tag: the bundle's version).

    Every file is its own blob (skipped when the repository has it already), the bundle
    manifest is the artifact's config, and PATH/model.sig goes along as a referrer. The tag
    is written last: a push that fails leaves no tag behind. Prints the pinned reference
    and the bundle digest.
    """
    manifest = _read_manifest_at(path, version).manifest
    result = api.push(
        path, target, version=version, **_registry_kwargs(username, password_stdin, plain_http)
    )
    total = len(result.uploaded) + len(result.skipped)
    click.echo(
        f"Pushed {manifest.label} to {result.reference}\n"
        f"digest: {result.digest}\n"
        f"files: {len(result.uploaded)} of {total} uploaded, "
        f"{len(result.skipped)} already in the repository\n"
        f"signature: {'attached (referrer)' if result.signed else 'none (unsigned)'}"
    )


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Copy a bundle version from a registry (or any PATH) to a root.",
)
@click.argument("source")
@click.argument("root", type=click.Path(file_okay=False))
@VERSION_OPTION
@DIGEST_OPTION
@click.option("--overwrite", is_flag=True, help="Replace ROOT/<version> if it exists.")
@registry_options
def pull(
    source: str,
    root: str,
    version: str | None,
    digest: str | None,
    overwrite: bool,
    username: str | None,
    password_stdin: bool,
    plain_http: bool,
) -> None:
    """Copy the bundle at SOURCE (oci://HOST/REPO:TAG or @sha256:..., or any PATH) into
    ROOT as ROOT/<version>, verified against the registry's digests and the bundle's own
    hashes, with its signature (model.sig) when it has one.
    """
    options = _registry_kwargs(username, password_stdin, plain_http) if is_oci(source) else {}
    written = api.pull(source, root, version=version, digest=digest, overwrite=overwrite, **options)
    label = read_manifest(written).label
    signed = (written / SIGNATURE_FILE).is_file()
    state = f"{SIGNATURE_FILE} (check it: bundle verify --public-key)" if signed else "none"
    click.echo(f"Pulled {label} to {written}\ndigest: {digest_of(written)}\nsignature: {state}")
