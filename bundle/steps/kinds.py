"""`Kind`: everything keras-bundle knows about one scikit-learn class, in one object.

A kind holds each *facet* of its class side by side:

===============  ==========================================================================
facet            what it is
===============  ==========================================================================
storage          the fitted attributes stored next to the parameters (JSON + ``.npz``, no
                 pickle), with optional hooks for values JSON cannot hold directly
plan             the fitted constants prediction needs, extracted once from the object
replay           the NumPy replay of ``transform``: plan -> `Node` (bit-identical)
graph            the TensorFlow form of ``transform``: plan -> `Node` (parity within 1e-6)
rules            what the step says about its raw input (missing values, infinity,
                 categories), for the input contract
decode           how the step is used as a postprocess step (``class_ids`` or
                 ``inverse_transform``)
decode_graph     the TensorFlow form of that postprocess step
===============  ==========================================================================

A kind that lacks a facet says why in `Kind.lacks`; `tests/test_kinds.py` walks the
registry (`bundle.steps.registry`) and fails on a facet that is neither there nor explained.
The family modules (`scalers`, `imputers`, `encoders`, ...) each list their kinds; adding a
class is one entry there and one test case.

The NumPy replay and the TensorFlow form both compile against a `Context` (what the step
knows about its input at compile time) into a `Node` (a function from a frame to a value,
and the output width).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DECODE_FACETS",
    "FACETS",
    "TRANSFORM_FACETS",
    "Context",
    "Kind",
    "NoForm",
    "Node",
    "StepRules",
    "ValueCodec",
]

TRANSFORM_FACETS = ("plan", "replay", "graph", "rules")
DECODE_FACETS = ("decode", "decode_graph")
FACETS = ("storage", *TRANSFORM_FACETS, *DECODE_FACETS)

# What a step does with a missing value (NaN, or None in text) in a raw column it reads.
HANDLED, PASSES, REFUSED = "handled", "passes", "refused"


class NoForm(Exception):
    """Raised while compiling: this configuration of a step has no replay or graph form.

    The message says which option and why; the replay then falls back to scikit-learn's
    ``transform`` and export refuses the bundle, naming the step.
    """


@dataclass(frozen=True)
class StepRules:
    """What one step says about the raw columns it reads.

    Attributes:
        missing: `HANDLED` (the step imputes NaN), `PASSES` (NaN goes through untouched, to
            the next step) or `REFUSED`.
        infinity_refused: the step refuses infinity (scikit-learn's check_array).
        keeps_columns: output column j is input column j (a scaler, an imputer that drops
            nothing), so the next step of a pipeline still reads the raw columns.
        keeps_infinity: infinity leaves the step as infinity (an affine map does; ``tanh``
            does not), so a later step's refusal of it still applies to the raw column.
        categories: the categories of each column, for an encoder; None otherwise.
        closed: the encoder refuses values it did not see (``handle_unknown='error'``).
    """

    missing: str = REFUSED
    infinity_refused: bool = True
    keeps_columns: bool = False
    keeps_infinity: bool = True
    categories: list[list[Any]] | None = None
    closed: bool = False


@dataclass(frozen=True)
class Node:
    """One compiled step: `run` maps an input frame to a value of `n_out` columns.

    Attributes:
        run: the compiled function.
        n_out: the number of output columns.
        numeric: True when the output is numbers, False for text, None for "as its input".
        sparse: `run` accepts a sparse value as it is (otherwise it gets a dense frame).
    """

    run: Callable[[Any], Any]
    n_out: int
    numeric: bool | None = True
    sparse: bool = False


@dataclass(frozen=True)
class Context:
    """What a step knows about its input when it is compiled (NumPy replay and graph alike).

    Attributes:
        n_in: the number of input columns.
        names: their names, when known (error messages name columns with them).
        path: where the step sits, e.g. ``preprocess[0] ColumnTransformer > transformers['num']``.
        numeric: whether the input is numeric (True), text (False) or unknown (None).
        build: the graph being built (TensorFlow forms only): it records problems, checks
            and lookup tables; None in the NumPy replay.
    """

    n_in: int
    names: tuple[str, ...] | None = None
    path: str = ""
    numeric: bool | None = None
    build: Any = None

    def label(self, j: int) -> str:
        """``column 2 ('c2')``: how replay messages name an input column."""
        return f"column {j}" + (f" ({self.names[j]!r})" if self.names else "")

    def quoted(self, j: int) -> str:
        """``'c2'`` (or ``2`` without names): how graph messages name an input column."""
        return repr(self.names[j]) if self.names else f"{j}"

    def column(self, j: int) -> str | None:
        return self.names[j] if self.names else None

    def child(
        self,
        label: str,
        n_in: int,
        names: tuple[str, ...] | None,
        numeric: bool | None = None,
    ) -> Context:
        """The context of a step inside this one (a pipeline step, a column block)."""
        return Context(
            n_in, names, f"{self.path} > {label}" if self.path else label, numeric, self.build
        )


@dataclass(frozen=True)
class ValueCodec:
    """How storage writes and reads one fitted attribute JSON cannot hold as it is.

    `encode` turns the value into plain values, lists, dicts, arrays and estimators (what
    the native writer stores); `decode` rebuilds it from what was read. Neither may import
    a name found in the file.
    """

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


@dataclass(frozen=True)
class Kind:
    """One scikit-learn class: how it is stored, planned, replayed, exported and checked.

    Attributes:
        cls: the class (exactly: subclasses may hold state the kind does not know).
        family: the family module's name, e.g. ``"scalers"``.
        state: fitted attributes storage may carry besides `COMMON_STATE`.
        plan: ``plan(obj, context) -> constants``: the fitted constants prediction needs.
        replay: ``replay(constants, context) -> Node``: NumPy, bit-identical to ``transform``.
        graph: ``graph(constants, context) -> Node``: the TensorFlow form.
        rules: ``rules(obj) -> StepRules`` for a step that reads raw columns.
        walk: ``walk(obj, columns, into)`` for a container: the rules of what it holds.
        decode: the postprocess mode, or ``decode(obj) -> mode``; None: not a decoder.
        decode_graph: ``decode_graph(obj, mode, shape, where, build) -> fn | None``.
        decode_replay: ``decode_replay(obj, ids) -> labels | None``: a faster NumPy decode
            than ``inverse_transform`` (None from it: use ``inverse_transform``).
        params: ``params(obj, get_params()) -> params`` before storage.
        values: attribute -> `ValueCodec` for attributes JSON cannot hold directly.
        refuse: ``refuse(obj) -> why | None``: a configuration storage must not keep
            natively (it is then stored with joblib, and needs trusted=True to load).
        documents: the step reads one column of documents (1-D), not a table.
        lacks: facet -> why this kind has no such facet (checked by the conformance test).
        exported: the options the TensorFlow form covers, for the README's table.
        name: the public import path written to files; default ``<public module>.<Class>``.
    """

    cls: type
    family: str
    state: tuple[str, ...] = ()
    plan: Callable[[Any, Context], Any] | None = None
    replay: Callable[[Any, Context], Node] | None = None
    graph: Callable[[Any, Context], Node] | None = None
    rules: Callable[[Any], StepRules] | None = None
    walk: Callable[[Any, list[str], Any], None] | None = None
    decode: str | Callable[[Any], str] | None = None
    decode_graph: Callable[..., Any] | None = None
    decode_replay: Callable[[Any, Any], Any] | None = None
    params: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    values: Mapping[str, ValueCodec] = field(default_factory=dict)
    refuse: Callable[[Any], str | None] | None = None
    documents: bool = False
    lacks: Mapping[str, str] = field(default_factory=dict)
    exported: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            module = ".".join(p for p in self.cls.__module__.split(".") if not p.startswith("_"))
            object.__setattr__(self, "name", f"{module}.{self.cls.__name__}")

    def has(self, facet: str) -> bool:
        """Whether the kind has `facet` (see `FACETS`)."""
        if facet == "storage":
            return True
        if facet == "rules":
            return self.rules is not None or self.walk is not None
        return getattr(self, facet) is not None

    def why_not(self, facet: str) -> str | None:
        """The stated reason this kind lacks `facet`, or None."""
        return self.lacks.get(facet)

    def mode(self, obj: Any) -> str | None:
        """The postprocess mode of `obj`, or None when it is not a decoder."""
        return self.decode(obj) if callable(self.decode) else self.decode
