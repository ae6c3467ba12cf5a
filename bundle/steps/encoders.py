"""Kinds of the category encoders: one-hot, ordinal and target encoding."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

from . import graph as g
from . import replay as r
from .kinds import PASSES, Context, Kind, Node, StepRules

__all__ = ["KINDS"]

FAMILY = "encoders"


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a category value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _encoder_rules(obj: Any) -> StepRules:
    """Missing values are categories (or unknown); infinity is refused; unseen values are
    refused under ``handle_unknown='error'``."""
    categories = [[_plain(v) for v in values] for values in obj.categories_]
    closed = getattr(obj, "handle_unknown", "error") == "error"
    return StepRules(missing=PASSES, infinity_refused=True, categories=categories, closed=closed)


def _infrequent(encoder: Any, j: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not encoder._infrequent_enabled:
        return None, None
    return encoder._default_to_infrequent_mappings[j], encoder._infrequent_indices[j]


# ---------------------------------------------------------------------------------------
# OneHotEncoder
# ---------------------------------------------------------------------------------------


class OneHotPlan(NamedTuple):
    """The fitted constants of a OneHotEncoder.

    Attributes:
        encoder: the encoder (its categories and ``handle_unknown``, for messages).
        tables: per feature, the output column of each category (last entry: unseen), -1
            for none, counted from the feature's first output column.
        widths: the number of output columns of each feature.
        warning: the warning scikit-learn gives for unseen values, or None.
        dtype: the output dtype.
    """

    encoder: Any
    tables: list[np.ndarray]
    widths: list[int]
    warning: str | None
    dtype: np.dtype


def one_hot_columns(obj: OneHotEncoder, j: int) -> np.ndarray:
    """Output column of each category of feature `j` (last entry: unseen), -1 for none."""
    mapping, infrequent = _infrequent(obj, j)
    grouped = np.arange(len(obj.categories_[j])) if mapping is None else np.asarray(mapping)
    drops = obj._drop_idx_after_grouping
    drop = None if drops is None else drops[j]

    def column(group: int) -> int:
        if drop is None:
            return group
        return -1 if group == drop else group - (group > drop)

    to_infrequent = infrequent is not None and obj.handle_unknown in ("infrequent_if_exist", "warn")
    unseen = column(int(grouped[infrequent[0]])) if to_infrequent else -1
    return np.array([column(int(k)) for k in grouped] + [unseen], dtype=np.intp)


def _one_hot_warning(obj: OneHotEncoder) -> str | None:
    if obj.handle_unknown == "warn" or (
        obj.handle_unknown == "infrequent_if_exist" and obj.drop is not None
    ):
        return "These unknown categories will be encoded as the infrequent category."
    if obj.handle_unknown == "ignore" and obj.drop is not None:
        return "These unknown categories will be encoded as all zeros"
    return None


def _one_hot_plan(obj: OneHotEncoder, ctx: Context) -> OneHotPlan:
    n = len(obj.categories_)
    return OneHotPlan(
        obj,
        [one_hot_columns(obj, j) for j in range(n)],
        [int(w) for w in obj._n_features_outs],
        _one_hot_warning(obj),
        np.dtype(obj.dtype),
    )


def _one_hot_replay(plan: OneHotPlan, ctx: Context) -> Node:
    encoder = plan.encoder
    lookups = [r.Lookup(cats) for cats in encoder.categories_]
    offsets = np.cumsum([0, *plan.widths])
    tables = [np.where(t >= 0, t + offsets[j], -1) for j, t in enumerate(plan.tables)]
    width, warning, refuse = int(offsets[-1]), plan.warning, encoder.handle_unknown == "error"

    def run(frame: Any) -> Any:
        targets = np.empty((frame.n_rows, len(tables)), dtype=np.intp)
        with_unknown = []
        for j, codes in r.category_codes(encoder, lookups, frame, ctx, refuse=refuse):
            targets[:, j] = tables[j][codes]
            if warning and (codes < 0).any():
                with_unknown.append(j)
        if with_unknown:
            message = f"Found unknown categories in columns {with_unknown} during transform. "
            warnings.warn(message + warning, UserWarning, stacklevel=4)
        return r.OneHot(targets, width, plan.dtype)

    return Node(run, width)


def _one_hot_graph(plan: OneHotPlan, ctx: Context) -> Node:
    encoder = plan.encoder
    lookups = [
        g.Lookup(c, ctx, f"feature {ctx.quoted(j)}") for j, c in enumerate(encoder.categories_)
    ]
    tables = [t.astype(np.int64) for t in plan.tables]
    refuse = encoder.handle_unknown == "error"

    def run(frame: Any) -> Any:
        tf = g.tf()
        codes = g.encoder_codes(encoder, lookups, frame, ctx, refuse_unknown=refuse)
        blocks = [
            tf.one_hot(g.gather_unseen_last(table, code), width, dtype=plan.dtype)  # -1: zeros
            for table, code, width in zip(tables, codes, plan.widths, strict=True)
        ]
        return g.TensorFrame.of(g.stack(blocks, frame.n_rows, plan.dtype))

    return Node(run, sum(plan.widths))


# ---------------------------------------------------------------------------------------
# OrdinalEncoder
# ---------------------------------------------------------------------------------------


class OrdinalPlan(NamedTuple):
    """The fitted constants of an OrdinalEncoder: per feature, the encoded value of each
    category (last entry: unseen)."""

    encoder: Any
    tables: list[np.ndarray]
    dtype: np.dtype


def ordinal_values(obj: OrdinalEncoder, j: int) -> np.ndarray:
    """Encoded value of each category of feature `j` (last entry: unseen)."""
    mapping, _ = _infrequent(obj, j)
    missing = obj._missing_indices.get(j)
    values = [
        obj.encoded_missing_value if k == missing else (k if mapping is None else mapping[k])
        for k in range(len(obj.categories_[j]))
    ]
    unseen = obj.unknown_value if obj.handle_unknown == "use_encoded_value" else 0
    return np.array([*values, unseen], dtype=obj.dtype)


def _ordinal_plan(obj: OrdinalEncoder, ctx: Context) -> OrdinalPlan:
    tables = [ordinal_values(obj, j) for j in range(len(obj.categories_))]
    return OrdinalPlan(obj, tables, np.dtype(obj.dtype))


def _ordinal_replay(plan: OrdinalPlan, ctx: Context) -> Node:
    encoder, tables = plan.encoder, plan.tables
    lookups = [r.Lookup(cats) for cats in encoder.categories_]
    refuse = encoder.handle_unknown == "error"

    def run(frame: Any) -> Any:
        out = np.empty((frame.n_rows, len(tables)), dtype=plan.dtype)
        for j, codes in r.category_codes(encoder, lookups, frame, ctx, refuse=refuse):
            out[:, j] = tables[j][codes]
        return r.ArrayFrame.of(out)

    return Node(run, len(tables))


def _ordinal_graph(plan: OrdinalPlan, ctx: Context) -> Node:
    encoder, tables = plan.encoder, plan.tables
    lookups = [
        g.Lookup(c, ctx, f"feature {ctx.quoted(j)}") for j, c in enumerate(encoder.categories_)
    ]
    refuse = encoder.handle_unknown == "error"

    def run(frame: Any) -> Any:
        tf = g.tf()
        codes = g.encoder_codes(encoder, lookups, frame, ctx, refuse_unknown=refuse)
        if not codes:
            return g.TensorFrame.of(g.empty(frame.n_rows, plan.dtype))
        columns = [g.gather_unseen_last(t, c) for t, c in zip(tables, codes, strict=True)]
        return g.TensorFrame.of(tf.stack(columns, axis=1))

    return Node(run, len(tables))


# ---------------------------------------------------------------------------------------
# TargetEncoder
# ---------------------------------------------------------------------------------------


class TargetPlan(NamedTuple):
    """Per output column: its input feature and its table (each category's encoding, then
    the target mean for unseen categories)."""

    encoder: Any
    features: list[int]
    tables: list[np.ndarray]


def _target_plan(obj: TargetEncoder, ctx: Context) -> TargetPlan:
    n_classes = len(obj.classes_) if obj.target_type_ == "multiclass" else 1
    means = np.atleast_1d(np.asarray(obj.target_mean_, dtype=np.float64))
    features, tables = [], []
    for e, encoding in enumerate(obj.encodings_):
        features.append(e // n_classes)
        unseen = means[e % n_classes]
        tables.append(np.append(np.asarray(encoding, dtype=np.float64), unseen))
    return TargetPlan(obj, features, tables)


def _target_rules(obj: TargetEncoder) -> StepRules:
    categories = [[_plain(v) for v in values] for values in obj.categories_]
    return StepRules(missing=PASSES, infinity_refused=True, categories=categories, closed=False)


def _target_replay(plan: TargetPlan, ctx: Context) -> Node:
    encoder = plan.encoder
    lookups = [r.Lookup(cats) for cats in encoder.categories_]

    def run(frame: Any) -> Any:
        codes = dict(r.category_codes(encoder, lookups, frame, ctx, refuse=False))
        out = np.empty((frame.n_rows, len(plan.tables)), dtype=np.float64)
        for e, (j, table) in enumerate(zip(plan.features, plan.tables, strict=True)):
            out[:, e] = table[codes[j]]  # code -1 (unseen): the last entry, the target mean
        return r.ArrayFrame.of(out)

    return Node(run, len(plan.tables))


def _target_graph(plan: TargetPlan, ctx: Context) -> Node:
    encoder = plan.encoder
    lookups = [
        g.Lookup(c, ctx, f"feature {ctx.quoted(j)}") for j, c in enumerate(encoder.categories_)
    ]

    def run(frame: Any) -> Any:
        tf = g.tf()
        codes = g.encoder_codes(encoder, lookups, frame, ctx, refuse_unknown=False)
        if not plan.tables:
            return g.TensorFrame.of(g.empty(frame.n_rows, np.float64))
        columns = [
            g.gather_unseen_last(table, codes[j])
            for j, table in zip(plan.features, plan.tables, strict=True)
        ]
        return g.TensorFrame.of(tf.stack(columns, axis=1))

    return Node(run, len(plan.tables))


KINDS = (
    Kind(
        OneHotEncoder,
        FAMILY,
        state=(
            "_infrequent_enabled",
            "categories_",
            "_infrequent_indices",
            "_default_to_infrequent_mappings",
            "_drop_idx_after_grouping",
            "drop_idx_",
            "_n_features_outs",
        ),
        plan=_one_hot_plan,
        replay=_one_hot_replay,
        graph=_one_hot_graph,
        rules=_encoder_rules,
        decode="inverse_transform",
        lacks={
            "decode_graph": "decoding one-hot scores back to categories is not built into "
            "the graph; Bundle.predict decodes them with scikit-learn's inverse_transform"
        },
        exported="text through `tf.lookup.StaticHashTable`, numbers through a sorted search; "
        "NaN categories; `handle_unknown` `error`/`ignore`/`infrequent_if_exist`/`warn`; "
        "`drop`; `min_frequency`/`max_categories`; `dtype`",
    ),
    Kind(
        OrdinalEncoder,
        FAMILY,
        state=(
            "_infrequent_enabled",
            "categories_",
            "_missing_indices",
            "_infrequent_indices",
            "_default_to_infrequent_mappings",
        ),
        plan=_ordinal_plan,
        replay=_ordinal_replay,
        graph=_ordinal_graph,
        rules=_encoder_rules,
        decode="inverse_transform",
        lacks={
            "decode_graph": "mapping ordinal codes back to categories is not built into the "
            "graph; Bundle.predict decodes them with scikit-learn's inverse_transform"
        },
        exported="the same lookups; `use_encoded_value` (`unknown_value`, NaN too), "
        "`encoded_missing_value`, infrequent categories",
    ),
    Kind(
        TargetEncoder,
        FAMILY,
        state=(
            "_infrequent_enabled",
            "categories_",
            "classes_",
            "encodings_",
            "target_mean_",
            "target_type_",
        ),
        plan=_target_plan,
        replay=_target_replay,
        graph=_target_graph,
        rules=_target_rules,
        lacks={
            "decode": "a target encoding has no inverse_transform",
            "decode_graph": "a target encoding has no inverse_transform",
        },
        exported="the fitted encodings (binary, continuous and multiclass targets); unseen "
        "categories get the target mean",
    ),
)
