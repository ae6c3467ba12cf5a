"""Kinds of the containers: Pipeline, ColumnTransformer and FeatureUnion.

A container's plan lists what it holds; its replay and graph compile each part through that
part's own kind and compose them as scikit-learn does (in order, or side by side with
``np.hstack`` and ``transformer_weights``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline

from . import graph as g
from . import replay as r
from .frame import common_dtype, contiguous
from .kinds import Context, Kind, Node, NoForm
from .rules import InputRules, select_columns, walk_step

__all__ = ["KINDS", "reads_documents"]

FAMILY = "compose"
CONTAINER = "a container: postprocess takes one step with inverse_transform"


def _is_keyword(trans: Any, word: str) -> bool:
    return isinstance(trans, str) and trans == word


def reads_documents(obj: Any) -> bool:
    """Whether `obj` (or the first step of a pipeline) reads a 1-D sequence of documents."""
    from .registry import find_kind

    while isinstance(obj, Pipeline):
        steps = [s for _, s in obj.steps if s is not None and not _is_keyword(s, "passthrough")]
        if not steps:
            return False
        obj = steps[0]
    kind = find_kind(type(obj))
    return kind is not None and kind.documents


class Block(NamedTuple):
    """One part of a ColumnTransformer or FeatureUnion.

    Attributes:
        label: how messages name it, e.g. ``transformers['num']``.
        transformer: the fitted transformer, or ``"passthrough"``.
        indices: the input columns it reads (None: all of them).
        weight: its ``transformer_weights`` entry, or None.
    """

    label: str
    transformer: Any
    indices: list[int] | None
    weight: float | None


# ---------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------


def _pipeline_plan(obj: Pipeline, ctx: Context) -> list[tuple[str, Any]]:
    return [
        (name, step)
        for name, step in obj.steps
        if step is not None and not _is_keyword(step, "passthrough")
    ]


def _names_after(step: Any, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Output names of a step, only to name columns in later error messages."""
    try:
        return tuple(str(n) for n in step.get_feature_names_out(list(names) if names else None))
    except Exception:  # any step without names: messages then use positions
        return None


def _pipeline(plan: list[tuple[str, Any]], ctx: Context, compile_: Callable) -> Node:
    nodes, n_in, names, numeric = [], ctx.n_in, ctx.names, ctx.numeric
    for name, step in plan:
        sub = ctx.child(f"steps[{name!r}] {type(step).__name__}", n_in, names, numeric)
        node = compile_(step, sub)
        nodes.append(node)
        after = _names_after(step, names)
        # Messages name columns: a step that keeps the width keeps the columns' names.
        names = after if after is not None or node.n_out != n_in else names
        numeric = numeric if node.numeric is None else node.numeric
        n_in = node.n_out

    def run(value: Any) -> Any:
        for node in nodes:
            value = node.run(value if node.sparse else value.frame())
        return value

    sparse = bool(nodes) and nodes[0].sparse
    return Node(run, n_in, numeric, sparse)


def _pipeline_replay(plan: list[tuple[str, Any]], ctx: Context) -> Node:
    return _pipeline(plan, ctx, r.compile_node)


def _pipeline_graph(plan: list[tuple[str, Any]], ctx: Context) -> Node:
    return _pipeline(plan, ctx, g.compile_graph)


def _pipeline_walk(obj: Pipeline, columns: list[str], into: InputRules) -> None:
    state = None
    for _, step in _pipeline_plan(obj, Context(len(columns))):
        state = walk_step(step, columns, into, state)
        if state is None:
            break  # past an encoder or a projection, columns no longer mean raw columns


# ---------------------------------------------------------------------------------------
# ColumnTransformer and FeatureUnion: blocks side by side
# ---------------------------------------------------------------------------------------


def _column_transformer_params(ct: ColumnTransformer, params: dict[str, Any]) -> dict[str, Any]:
    """Replace callable column selections by the columns they resolved to at fit time."""
    resolved = getattr(ct, "_columns", None)
    if resolved is None:
        return params
    params["transformers"] = [
        (name, trans, fitted if callable(columns) else columns)
        for (name, trans, columns), fitted in zip(ct.transformers, resolved, strict=False)
    ]
    return params


def _column_transformer_plan(obj: ColumnTransformer, ctx: Context) -> list[Block]:
    weights = obj.transformer_weights or {}
    blocks = []
    for name, trans, columns in obj.transformers_:
        indices = [int(i) for i in obj._transformer_to_input_indices[name]]
        if _is_keyword(trans, "drop") or not indices:
            continue
        if reads_documents(trans) and not isinstance(columns, (str, int, np.integer)):
            raise NoForm(
                f"transformers[{name!r}] is a text vectorizer given a list of columns "
                f"({columns!r}): scikit-learn then iterates over the table, not the "
                "documents. Select the text column by name, e.g. ('text', vectorizer, 'body')"
            )
        label = "remainder" if name == "remainder" else f"transformers[{name!r}]"
        blocks.append(Block(label, trans, indices, weights.get(name)))
    return blocks


def _feature_union_plan(obj: FeatureUnion, ctx: Context) -> list[Block]:
    weights = obj.transformer_weights or {}
    return [
        Block(f"transformer_list[{name!r}]", trans, None, weights.get(name))
        for name, trans in obj.transformer_list
        if not _is_keyword(trans, "drop")
    ]


def _block_context(block: Block, ctx: Context) -> Context:
    indices = block.indices if block.indices is not None else list(range(ctx.n_in))
    names = tuple(ctx.names[i] for i in indices) if ctx.names else None
    return ctx.child(
        f"{block.label} {type(block.transformer).__name__}", len(indices), names, ctx.numeric
    )


def _compile_block(block: Block, ctx: Context, compile_: Callable) -> Node:
    sub = _block_context(block, ctx)
    if _is_keyword(block.transformer, "passthrough"):
        return Node(lambda frame: frame, sub.n_in, sub.numeric)
    return compile_(block.transformer, sub)


def _selection(block: Block) -> list[int] | slice | None:
    if block.indices is None:
        return None
    return contiguous(block.indices) or block.indices


def _side_by_side_replay(blocks: list[Block], ctx: Context) -> Node:
    """Run each block on its columns; hstack like scikit-learn.

    The output is allocated once and each block written into it, so a one-hot or sparse
    block is never materialized on its own.
    """
    parts, nodes = [], []
    for block in blocks:
        node = _compile_block(block, ctx, r.compile_node)
        nodes.append(node)
        parts.append((_selection(block), _weighted_replay(node, block.weight), node.n_out))
    width = sum(n for *_, n in parts)
    flags = [node.numeric for node in nodes]
    numeric = False if False in flags else (None if None in flags else True)

    def run(frame: Any) -> Any:
        values = [block(frame if cols is None else frame.take(cols)) for cols, block, _ in parts]
        if len(values) == 1:
            return values[0]
        dtype = common_dtype([value.dtype for value in values])
        lazy = any(isinstance(value, (r.OneHot, r.SparseRows)) for value in values)
        out = (np.zeros if lazy else np.empty)((frame.n_rows, width), dtype=dtype)
        start = 0
        for value in values:
            value.write(out, start)
            start += value.width
        return r.ArrayFrame.of(out)

    return Node(run, width, numeric)


def _weighted_replay(node: Node, weight: float | None) -> Callable[[Any], Any]:
    if weight is None:
        return node.run
    return lambda frame: r.ArrayFrame.of(node.run(frame).frame().full() * weight)


def _side_by_side_graph(blocks: list[Block], ctx: Context) -> Node:
    """Run each block on its columns and join the results like ``np.hstack``."""
    parts = []
    for block in blocks:
        node = _compile_block(block, ctx, g.compile_graph)
        parts.append((block.indices, _weighted_graph(node, block.weight), node.n_out))
    width = sum(n for *_, n in parts)

    def run(frame: Any) -> Any:
        tf = g.tf()
        values = [block(frame if cols is None else frame.take(cols)) for cols, block, _ in parts]
        if len(values) == 1:
            return values[0]
        if any(value.has_text for value in values):  # keep text as columns: no common dtype
            columns = [c for value in values for c in value.columns()]
            return g.TensorFrame(frame.n_rows, columns=columns)
        dtype = common_dtype([value.dtype for value in values])
        arrays = [tf.cast(value.full(), dtype) for value in values]
        return g.TensorFrame.of(g.stack(arrays, frame.n_rows, dtype))

    return Node(run, width)


def _weighted_graph(node: Node, weight: float | None) -> Callable[[Any], Any]:
    if weight is None:
        return node.run

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = node.run(frame).full()
        dtype = np.result_type(g.np_dtype(x), weight)
        return g.TensorFrame.of(tf.cast(x, dtype) * tf.constant(weight, dtype=dtype))

    return run


def _column_transformer_walk(obj: ColumnTransformer, columns: list[str], into: InputRules):
    for _, transformer, selection in getattr(obj, "transformers_", []):
        if isinstance(transformer, str):  # "drop" / "passthrough"
            continue
        walk_step(transformer, select_columns(columns, selection), into, None)


def _feature_union_walk(obj: FeatureUnion, columns: list[str], into: InputRules) -> None:
    """Every branch sees every column: a column is imputed only if every branch imputes it;
    it refuses infinity (or unseen categories) if any branch does."""
    handled: set[str] | None = None
    for _, transformer in obj.transformer_list:
        if isinstance(transformer, str):
            continue
        branch = InputRules()
        walk_step(transformer, columns, branch, None)
        handled = branch.missing_handled if handled is None else handled & branch.missing_handled
        into.closed_categories.update(branch.closed_categories)
        into.categories.update(branch.categories)
        into.infinity_refused.update(branch.infinity_refused)
    into.missing_handled.update(handled or set())


KINDS = (
    Kind(
        Pipeline,
        FAMILY,
        plan=_pipeline_plan,
        replay=_pipeline_replay,
        graph=_pipeline_graph,
        walk=_pipeline_walk,
        lacks={"decode": CONTAINER, "decode_graph": CONTAINER},
        exported="composed as scikit-learn composes it",
    ),
    Kind(
        ColumnTransformer,
        FAMILY,
        state=(
            "_columns",
            "_transformer_to_input_indices",
            "_remainder",
            "sparse_output_",
            "transformers_",
            "output_indices_",
            "_transformers_feature_names_out",
        ),
        params=_column_transformer_params,
        plan=_column_transformer_plan,
        replay=_side_by_side_replay,
        graph=_side_by_side_graph,
        walk=_column_transformer_walk,
        lacks={"decode": CONTAINER, "decode_graph": CONTAINER},
        exported="`remainder`, `transformer_weights`; column selectors resolved at fit time",
    ),
    Kind(
        FeatureUnion,
        FAMILY,
        state=("_transformers_feature_names_out",),
        plan=_feature_union_plan,
        replay=_side_by_side_replay,
        graph=_side_by_side_graph,
        walk=_feature_union_walk,
        lacks={"decode": CONTAINER, "decode_graph": CONTAINER},
        exported="`transformer_weights`",
    ),
)
