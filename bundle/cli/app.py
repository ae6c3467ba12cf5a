"""The ``bundle`` command: inspect, verify, list, predict, drift, archive, sign, push, pull,
tag, diff, serve, gc.

Every PATH is anything `Bundle.load` accepts: a version directory, a root of versions (the
highest is taken, or ``--version``), ``root@alias``, a ``.tar.gz``/``.zip`` archive, any
of these as an fsspec URL (``s3://bucket/models/churn``), or an OCI artifact
(``oci://registry.example.com/models/churn:1.2.0``, ``...@sha256:...``).

Exit codes::

    0  success (for `verify`: every check passed; for `diff`: always, unless --exit-code)
    1  an error (``Error: <message>`` on stderr), a failed check, drift beyond the
       thresholds (`drift`), or with ``diff --exit-code`` bundles that differ
    2  bad usage: a missing argument, an unknown option, an invalid value (click's convention)

Tracebacks are printed only with ``bundle --debug <command> ...``; TensorFlow's start-up lines
only with ``bundle --verbose <command> ...`` (or ``KERAS_BUNDLE_VERBOSE=1``).

`inspect`, `list`, `tag`, `archive`, `sign`, `push`, `pull`, `diff`, `gc` and
`verify --no-load` read manifests and files only: they never import TensorFlow or Keras,
and start in a fraction of the time `predict`, `verify` and `serve` need.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

import bundle as api

from ..errors import BundleError, BundleWarning
from ..model.quiet import VERBOSE_ENV

__all__ = ["cli", "main"]


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class _State:
    """What the group's options tell `main` (set by the group callback)."""

    debug: bool = False


# ---------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bundle`` command with `argv` (default: ``sys.argv[1:]``) and return its exit code.

    `BundleError` (and any other failure) becomes ``Error: <message>`` on stderr and exit code
    1; usage errors exit 2. ``bundle --debug ...`` prints the full traceback instead.

    Example:
        >>> from bundle.cli import main
        >>> main(["inspect", "models/churn", "--json"])
        0
    """
    state = _State()
    args = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            # Without standalone mode click returns the exit code of `ctx.exit(code)` (and
            # of --help, --version) instead of calling sys.exit: we return it.
            code = cli.main(args, prog_name="bundle", standalone_mode=False, obj=state)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            return 1
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            return 130
        except BrokenPipeError:
            # `bundle list | head`: the reader left. Point stdout at devnull so that the
            # interpreter's final flush does not fail on the closed pipe too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:
            return _report(exc, debug=state.debug)
    return code if isinstance(code, int) else 0


def _report(exc: BaseException, *, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return 1
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, (BundleError, OSError, ValueError)):
        message = f"{type(exc).__name__}: {message}"
    click.echo(f"Error: {message}", err=True)
    if not isinstance(exc, BundleError):
        click.echo("(Run `bundle --debug ...` for the full traceback.)", err=True)
    return 1


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
    """Our warnings read as ``Warning: <message>``; other libraries' keep their usual form."""
    if isinstance(category, type) and issubclass(category, BundleWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno).rstrip(), err=True)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


# ---------------------------------------------------------------------------- the group
@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="Print full tracebacks on errors.")
@click.option(
    "--verbose",
    is_flag=True,
    help=f"Show TensorFlow's start-up and log lines on stderr (also: {VERBOSE_ENV}=1).",
)
@click.version_option(
    api.__version__, "--version", prog_name="keras-bundle", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Inspect, verify, list, predict with, check drift of, archive, sign, push, pull, tag,
    diff, serve, gc and pack keras-bundles.

    PATH is a bundle version directory, a root of versions (the highest, or --version),
    ROOT@ALIAS, a .tar.gz/.zip archive, any of these as an fsspec URL (s3://...), or an OCI
    artifact (oci://HOST/REPO:TAG or @sha256:...).

    Exit codes: 0 success, 1 error or failed check, 2 bad usage.
    """
    if isinstance(ctx.obj, _State):
        ctx.obj.debug = debug
    if verbose:  # read when TensorFlow is first imported, after this
        os.environ[VERBOSE_ENV] = "1"


VERSION_OPTION = click.option(
    "--version",
    "version",
    metavar="V",
    default=None,
    help="The version (or alias) to use when PATH is a root of versions.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
TRUSTED_OPTION = click.option(
    "--trusted",
    is_flag=True,
    help="Allow loading parts that execute stored code (pickles, Lambda layers). Only for "
    "bundles you made or whose source you trust.",
)
DIGEST_OPTION = click.option(
    "--digest",
    metavar="SHA256",
    default=None,
    help="Refuse the bundle unless its digest is this one (sha256:..., as inspect prints it).",
)


def signature_options(command: Any) -> Any:
    """--public-key, --certificate-chain and --signature: verify the bundle's signature."""
    for option in reversed(
        [
            click.option(
                "--public-key",
                metavar="PEM",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="Verify the signature (model.sig) with this public key.",
            ),
            click.option(
                "--certificate-chain",
                metavar="PEM",
                type=click.Path(exists=True, dir_okay=False),
                multiple=True,
                help="Verify a certificate signature up to these root certificates (repeatable).",
            ),
            click.option(
                "--signature",
                metavar="FILE",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="The signature file, when it is not the bundle's own model.sig.",
            ),
        ]
    ):
        command = option(command)
    return command
