"""Kinds of the text vectorizers: CountVectorizer, TfidfVectorizer, HashingVectorizer,
TfidfTransformer.

A vectorizer reads one column of documents (inside a ColumnTransformer, a column selected
by name, not in a list). What is stored is everything ``transform`` uses: the analyzer
settings (``lowercase``, ``token_pattern``, ``ngram_range``, ``stop_words``, ``analyzer``
'word'/'char'/'char_wb', ...), the vocabulary as fitted (``max_df``, ``min_df`` and
``max_features`` already applied) and the IDF weights. A custom ``analyzer``,
``tokenizer`` or ``preprocessor`` is a function of the user's: storage refuses it by name,
so the vectorizer is stored with joblib (loading then needs ``trusted=True``), and the
replay runs it as scikit-learn does. ``input='file'``/``'filename'`` (which would read
files named in the input) is refused.

The NumPy replay runs the fitted analyzer itself (Python's ``re`` and ``str.lower``), counts
as scikit-learn counts and weighs with scikit-learn's own ``normalize``, so it is
bit-identical; its output stays sparse until a step or the model needs it dense. The
TensorFlow form tokenizes with TensorFlow's string ops (``\\w`` read as Unicode letters,
numbers and ``_``, as Python reads it), looks terms up in a hash table and keeps the
counts as a `tf.SparseTensor`; hashing is MurmurHash3 written in integer ops, so the
exported graph needs TensorFlow only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import (
    ENGLISH_STOP_WORDS,
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)

from . import graph as g
from . import replay as r
from .kinds import REFUSED, Context, Kind, Node, NoForm, StepRules

__all__ = ["KINDS"]

FAMILY = "text"
TEXT_RULES = StepRules(missing=REFUSED, infinity_refused=False)
NOT_A_DECODER = "a vectorizer has no inverse to decode model outputs with"
# Python's \s in Unicode strings, for RE2 (whose \s is ASCII only).
WHITESPACE = (
    r"[\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f} \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
# Python's \w in Unicode strings: letters, numbers and the underscore.
NOT_WORD = r"[^\p{L}\p{N}_]+"
# Token patterns with a TensorFlow form: runs of word characters of at least N characters.
WORD_RUNS = {
    r"(?u)\b\w\w+\b": 2,
    r"\b\w\w+\b": 2,
    r"(?u)\b\w+\b": 1,
    r"\b\w+\b": 1,
}


def _text_rules(obj: Any) -> StepRules:
    return TEXT_RULES


def refused_input(obj: Any) -> str | None:
    """Why a vectorizer's configuration cannot be stored natively, or None."""
    if getattr(obj, "input", "content") != "content":
        return (
            f"input={obj.input!r} reads files named in the input at prediction time; only "
            "input='content' is stored natively"
        )
    return None


# ---------------------------------------------------------------------------------------
# Reading documents
# ---------------------------------------------------------------------------------------


def _documents(frame: Any, ctx: Context) -> r.Column:
    """The one column of documents, refusing missing ones as scikit-learn does."""
    column = frame.column(0)
    if not isinstance(column, r.Factorized):
        column = np.asarray(column, dtype=object)
        if len(column) >= r.FACTORIZE_MIN_ROWS:
            column = r.factorized_if_large(column)
    values = column.uniques if isinstance(column, r.Factorized) else column
    bad = [i for i, v in enumerate(values.tolist()) if not isinstance(v, (str, bytes))]
    if bad:
        value = values[bad[0]]
        raise r.SchemaError(
            f"Input {ctx.label(0)} holds {value!r} where a document (a string) is expected: "
            f"{ctx.path or 'the vectorizer'} cannot vectorize it (scikit-learn raises "
            "'np.nan is an invalid document'). Fill missing documents with '' before "
            "predicting.",
            column=ctx.column(0),
        )
    return column


def _rows(column: r.Column, vectorize) -> sparse.csr_array:
    """`vectorize(documents)` per distinct document of a factorized column, then by row."""
    if isinstance(column, r.Factorized):
        return vectorize(column.uniques)[column.codes]
    return vectorize(column)


# ---------------------------------------------------------------------------------------
# CountVectorizer, TfidfVectorizer, TfidfTransformer
# ---------------------------------------------------------------------------------------


class Weights(NamedTuple):
    """TfidfTransformer's fitted weighting: ``sublinear_tf``, ``idf_`` (or None), ``norm``."""

    sublinear: bool
    idf: np.ndarray | None
    norm: str | None


def _weights(obj: TfidfTransformer) -> Weights:
    return Weights(bool(obj.sublinear_tf), getattr(obj, "idf_", None), obj.norm)


class Counting(NamedTuple):
    """The fitted constants of a CountVectorizer (or TfidfVectorizer).

    Attributes:
        vectorizer: the fitted vectorizer (its settings, for the graph).
        analyzer: ``build_analyzer()``, built once.
        vocabulary: term -> column.
        dtype: the output dtype.
        binary: counts become 1.
        weights: the TF-IDF weighting (TfidfVectorizer), or None.
    """

    vectorizer: Any
    analyzer: Any
    vocabulary: dict[str, int]
    dtype: np.dtype
    binary: bool
    weights: Weights | None


def _count_plan(obj: Any, ctx: Context) -> Counting:
    refused = refused_input(obj)
    if refused:
        raise NoForm(refused)
    weights = _weights(obj._tfidf) if isinstance(obj, TfidfVectorizer) else None
    return Counting(
        obj, obj.build_analyzer(), obj.vocabulary_, np.dtype(obj.dtype), bool(obj.binary), weights
    )


def _count(documents: np.ndarray, plan: Counting) -> sparse.csr_array:
    """`CountVectorizer._count_vocab(fixed_vocab=True)`, the same counting."""
    analyze, vocabulary = plan.analyzer, plan.vocabulary
    j_indices: list[int] = []
    values: list[int] = []
    indptr = [0]
    for doc in documents:
        counter: dict[int, int] = {}
        for feature in analyze(doc):
            index = vocabulary.get(feature)
            if index is not None:
                counter[index] = counter.get(index, 0) + 1
        j_indices.extend(counter.keys())
        values.extend(counter.values())
        indptr.append(len(j_indices))
    index_dtype = np.int32 if indptr[-1] <= np.iinfo(np.int32).max else np.int64
    matrix = sparse.csr_array(
        (
            np.asarray(values, dtype=np.intc),
            np.asarray(j_indices, dtype=index_dtype),
            np.asarray(indptr, dtype=index_dtype),
        ),
        shape=(len(indptr) - 1, len(vocabulary)),
        dtype=plan.dtype,
    )
    matrix.sort_indices()
    return matrix


def _weigh(matrix: sparse.csr_array, weights: Weights) -> sparse.csr_array:
    """`TfidfTransformer.transform` on a CSR matrix (float64/float32), in place."""
    from sklearn.preprocessing import normalize

    if weights.sublinear:
        np.log(matrix.data, matrix.data)
        matrix.data += 1.0
    if weights.idf is not None:
        matrix.data *= weights.idf[matrix.indices]
    if weights.norm is not None:
        matrix = normalize(matrix, norm=weights.norm, copy=False)
    return matrix


def _count_replay(plan: Counting, ctx: Context) -> Node:
    def vectorize(documents: np.ndarray) -> sparse.csr_array:
        matrix = _count(documents, plan)
        if plan.binary:
            matrix.data.fill(1)
        if plan.weights is not None:
            if matrix.dtype not in r.FLOATS:
                matrix = matrix.astype(np.float64)
            matrix = _weigh(matrix, plan.weights)
        return matrix

    def run(frame: Any) -> Any:
        return r.SparseRows(_rows(_documents(frame, ctx), vectorize))

    return Node(run, len(plan.vocabulary))


def _tfidf_transformer_plan(obj: TfidfTransformer, ctx: Context) -> Weights:
    return _weights(obj)


def _tfidf_transformer_replay(plan: Weights, ctx: Context) -> Node:
    why = "TfidfTransformer cannot handle it."

    def run(value: Any) -> Any:
        if isinstance(value, r.SparseRows):
            matrix = value.matrix
        else:
            x = r.floats(value)
            r.refuse_not_finite(r.not_finite(x), ctx, why)
            matrix = sparse.csr_array(x, dtype=x.dtype)
        matrix = matrix.astype(np.float64) if matrix.dtype not in r.FLOATS else matrix.copy()
        r.refuse_not_finite(r.not_finite(matrix.data), ctx, why, j=0)
        return r.SparseRows(_weigh(matrix, plan))

    return Node(run, ctx.n_in, sparse=True)


# ---------------------------------------------------------------------------------------
# HashingVectorizer
# ---------------------------------------------------------------------------------------


class Hashing(NamedTuple):
    """The settings of a HashingVectorizer (it has no fitted state)."""

    vectorizer: Any
    analyzer: Any
    hasher: Any
    binary: bool
    norm: str | None


def _hashing_plan(obj: HashingVectorizer, ctx: Context) -> Hashing:
    from sklearn.feature_extraction import FeatureHasher

    refused = refused_input(obj)
    if refused:
        raise NoForm(refused)
    hasher = FeatureHasher(
        n_features=obj.n_features,
        input_type="string",
        dtype=obj.dtype,
        alternate_sign=obj.alternate_sign,
    )
    return Hashing(obj, obj.build_analyzer(), hasher, bool(obj.binary), obj.norm)


def _hashing_replay(plan: Hashing, ctx: Context) -> Node:
    from sklearn.preprocessing import normalize

    def vectorize(documents: np.ndarray) -> sparse.csr_array:
        if len(documents) == 0:  # FeatureHasher refuses an empty sequence
            return sparse.csr_array((0, plan.hasher.n_features), dtype=plan.hasher.dtype)
        matrix = plan.hasher.transform(plan.analyzer(doc) for doc in documents)
        if plan.binary:
            matrix.data.fill(1)
        if plan.norm is not None:
            matrix = normalize(matrix, norm=plan.norm, copy=False)
        return sparse.csr_array(matrix)

    def run(frame: Any) -> Any:
        return r.SparseRows(_rows(_documents(frame, ctx), vectorize))

    return Node(run, int(plan.hasher.n_features))


# ---------------------------------------------------------------------------------------
# The graph: tokens, n-grams, lookups and counts with TensorFlow's string ops
# ---------------------------------------------------------------------------------------


def _graph_refusal(obj: Any) -> str | None:
    """Why the vectorizer's analyzer has no TensorFlow form, or None."""
    for option in ("analyzer", "tokenizer", "preprocessor"):
        value = getattr(obj, option, None)
        if callable(value):
            return f"a custom {option} ({getattr(value, '__name__', value)!r}) is Python code"
    if obj.strip_accents is not None:
        return f"strip_accents={obj.strip_accents!r} needs Unicode normalization (NFKD)"
    if obj.analyzer == "word" and obj.token_pattern not in WORD_RUNS:
        known = ", ".join(repr(p) for p in WORD_RUNS)
        return f"token_pattern={obj.token_pattern!r}; patterns with a TensorFlow form: {known}"
    if obj.decode_error != "strict" or obj.encoding.lower().replace("_", "-") not in (
        "utf-8",
        "utf8",
    ):
        return "documents other than UTF-8 text"
    return None


def _stop_words(obj: Any) -> list[str] | None:
    words = obj.stop_words
    if words is None:
        return None
    if isinstance(words, str):
        return sorted(ENGLISH_STOP_WORDS)  # "english", the only name scikit-learn knows
    return sorted(words)


def _graph_terms(texts: Any, obj: Any, ctx: Context) -> Any:
    """The analyzer's terms of each document, as a ragged tensor of strings."""
    tf = g.tf()
    if obj.lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    low, high = obj.ngram_range
    if obj.analyzer == "word":
        words = tf.strings.split(tf.strings.regex_replace(texts, NOT_WORD, " "), sep=" ")
        length = tf.strings.length(words, unit="UTF8_CHAR")
        words = tf.ragged.boolean_mask(words, length >= WORD_RUNS[obj.token_pattern])
        stop = _stop_words(obj)
        if stop:
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(stop), tf.zeros(len(stop), tf.int64)
                ),
                default_value=-1,
            )
            ctx.build.tables.append(table)
            words = tf.ragged.boolean_mask(words, table.lookup(words) < 0)
        grams = [words if n == 1 else tf.strings.ngrams(words, n, separator=" ") for n in
                 range(low, high + 1)]  # fmt: skip
        return tf.concat(grams, axis=1) if len(grams) > 1 else grams[0]
    if obj.analyzer == "char":
        texts = tf.strings.regex_replace(texts, WHITESPACE + "{2,}", " ")
        chars = tf.strings.unicode_split(texts, "UTF-8")
        grams = [tf.strings.ngrams(chars, n, separator="") for n in range(low, high + 1)]
        return tf.concat(grams, axis=1) if len(grams) > 1 else grams[0]
    # char_wb: n-grams of each whitespace-separated word padded with one space; a word
    # shorter than n is counted once, whole, and stops the larger n.
    words = tf.strings.split(tf.strings.regex_replace(texts, WHITESPACE + "+", " "), sep=" ")
    words = tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)
    padded = tf.strings.join([" ", words, " "])
    width = tf.strings.length(padded, unit="UTF8_CHAR")
    chars = tf.strings.unicode_split(padded, "UTF-8")  # [docs, words, chars]
    parts = []
    for n in range(low, high + 1):
        keep = width > n
        grams = tf.strings.ngrams(tf.ragged.boolean_mask(chars, keep), n, separator="")
        parts.append(grams.merge_dims(1, 2))
    whole = tf.ragged.boolean_mask(padded, width <= high)
    parts.append(whole)
    return tf.concat(parts, axis=1)


def _graph_documents(frame: Any, ctx: Context) -> Any:
    tf = g.tf()
    column = frame.column(0)
    if not isinstance(column, g.Text):
        raise NoForm("a vectorizer reads a text column; this one is numeric")
    ctx.build.check(
        tf.logical_not(tf.reduce_any(column.missing)),
        f"{ctx.path}: input column {ctx.quoted(0)} has a missing document (the missing "
        "token), which the vectorizer cannot vectorize",
    )
    return column.values


def _sparse_counts(rows: Any, columns: Any, values: Any, n_rows: Any, width: int, dtype) -> Any:
    """A `tf.SparseTensor` summing `values` at each distinct (row, column), sorted."""
    tf = g.tf()
    keys = rows * width + columns
    unique, position = tf.unique(keys, out_idx=tf.int64)
    sums = tf.math.unsorted_segment_sum(values, position, tf.shape(unique, tf.int64)[0])
    order = tf.argsort(unique)
    unique, sums = tf.gather(unique, order), tf.gather(sums, order)
    indices = tf.stack([unique // width, unique % width], axis=1)
    shape = tf.stack([tf.cast(n_rows, tf.int64), tf.constant(width, tf.int64)])
    return tf.SparseTensor(indices, tf.cast(sums, dtype), shape)


def _ones(tensor: Any) -> Any:
    """Every stored value set to 1 (``binary=True``; explicit zeros included)."""
    tf = g.tf()
    return tf.SparseTensor(tensor.indices, tf.ones_like(tensor.values), tensor.dense_shape)


def _graph_normalize(tensor: Any, norm: str) -> Any:
    """`sklearn.preprocessing.normalize` of a sparse tensor's rows (zero rows unchanged)."""
    tf = g.tf()
    rows = tensor.indices[:, 0]
    n = tf.cast(tensor.dense_shape[0], tf.int64)
    values = tensor.values
    if norm == "l1":
        norms = tf.math.unsorted_segment_sum(tf.abs(values), rows, n)
    elif norm == "l2":
        norms = tf.sqrt(tf.math.unsorted_segment_sum(values * values, rows, n))
    else:
        norms = tf.math.unsorted_segment_max(tf.abs(values), rows, n)
    norms = tf.where(tf.equal(norms, 0), tf.ones_like(norms), norms)
    return tf.SparseTensor(tensor.indices, values / tf.gather(norms, rows), tensor.dense_shape)


def _graph_weigh(tensor: Any, weights: Weights) -> Any:
    tf = g.tf()
    values = tensor.values
    if weights.sublinear:
        values = tf.math.log(values) + 1.0
    if weights.idf is not None:
        values = values * tf.gather(g.constant(weights.idf, g.np_dtype(values)),
                                    tensor.indices[:, 1])  # fmt: skip
    tensor = tf.SparseTensor(tensor.indices, values, tensor.dense_shape)
    return tensor if weights.norm is None else _graph_normalize(tensor, weights.norm)


def _count_graph(plan: Counting, ctx: Context) -> Node:
    obj = plan.vectorizer
    refusal = _graph_refusal(obj)
    if refusal:
        raise NoForm(refusal)
    tf = g.tf()
    terms = sorted(plan.vocabulary, key=plan.vocabulary.get)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(terms, tf.string),
            tf.constant([plan.vocabulary[t] for t in terms], tf.int64),
        ),
        default_value=-1,
    )
    ctx.build.tables.append(table)
    width = len(terms)
    dtype = plan.dtype if plan.weights is None or plan.dtype in r.FLOATS else np.float64

    def run(frame: Any) -> Any:
        texts = _graph_documents(frame, ctx)
        n_rows = tf.shape(texts, out_type=tf.int64)[0]
        grams = _graph_terms(texts, obj, ctx)
        index = table.lookup(grams.flat_values)
        rows = grams.value_rowids()
        known = index >= 0
        rows, index = tf.boolean_mask(rows, known), tf.boolean_mask(index, known)
        ones = tf.ones_like(index, dtype=tf.float64)
        counts = _sparse_counts(rows, index, ones, n_rows, width, dtype)
        if plan.binary:
            counts = tf.SparseTensor(
                counts.indices, tf.ones_like(counts.values), counts.dense_shape
            )
        if plan.weights is not None:
            counts = _graph_weigh(counts, plan.weights)
        return g.SparseBlock(counts, n_rows)

    return Node(run, width)


def _tfidf_transformer_graph(plan: Weights, ctx: Context) -> Node:
    def run(value: Any) -> Any:
        tf = g.tf()
        if isinstance(value, g.SparseBlock):
            tensor = value.tensor
        else:
            x = g.floats(value)
            g.refuse_not_finite(x, ctx)
            tensor = tf.sparse.from_dense(x)
        if g.np_dtype(tensor) not in r.FLOATS:
            tensor = tf.cast(tensor, tf.float64)
        return g.SparseBlock(_graph_weigh(tensor, plan), tf.shape(tensor, tf.int64)[0])

    return Node(run, ctx.n_in, sparse=True)


# MurmurHash3 (x86, 32 bits), in int64 arithmetic masked to 32 bits.
MASK = 0xFFFFFFFF


def _mul32(a: Any, constant: int) -> Any:
    """``a * constant`` modulo 2**32, exact in int64 (the product is split in halves)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (a * low + ((a * high) & 0xFFFF) * 65536) & MASK


def _rotl32(x: Any, r_: int) -> Any:
    return ((x * (1 << r_)) | (x // (1 << (32 - r_)))) & MASK


def _mix(k: Any) -> Any:
    return _mul32(_rotl32(_mul32(k, 0xCC9E2D51), 15), 0x1B873593)


def murmurhash3_32(tokens: Any) -> Any:
    """scikit-learn's ``murmurhash3_32(token.encode('utf-8'), seed=0)`` (signed) of each
    string in the 1-D tensor `tokens`, as int64."""
    tf = g.tf()
    n_bytes = tf.cast(tf.strings.length(tokens), tf.int64)
    width = tf.maximum((tf.reduce_max(tf.concat([n_bytes, [0]], 0)) + 3) // 4 * 4, 4)
    raw = tf.cast(tf.io.decode_raw(tokens, tf.uint8, fixed_length=tf.cast(width, tf.int32)),
                  tf.int64)  # fmt: skip
    raw = tf.reshape(raw, [tf.shape(tokens)[0], -1, 4])
    words = raw[:, :, 0] + raw[:, :, 1] * 256 + raw[:, :, 2] * 65536 + raw[:, :, 3] * 16777216
    n_blocks = n_bytes // 4

    def block(h: Any, step: Any) -> Any:
        word, index = step
        mixed = tf.bitwise.bitwise_xor(h, _mix(word))
        mixed = (_mul32(_rotl32(mixed, 13), 5) + 0xE6546B64) & MASK
        return tf.where(index < n_blocks, mixed, h)

    positions = tf.range(tf.shape(words, tf.int64)[1], dtype=tf.int64)
    h = tf.foldl(block, (tf.transpose(words), positions), initializer=tf.zeros_like(n_bytes))
    tail = tf.gather(words, tf.minimum(n_blocks, tf.shape(words, tf.int64)[1] - 1), batch_dims=1)
    h = tf.where(n_bytes % 4 > 0, tf.bitwise.bitwise_xor(h, _mix(tail)), h)
    h = tf.bitwise.bitwise_xor(h, n_bytes)
    h = tf.bitwise.bitwise_xor(h, h // 65536)
    h = _mul32(h, 0x85EBCA6B)
    h = tf.bitwise.bitwise_xor(h, h // 8192)
    h = _mul32(h, 0xC2B2AE35)
    h = tf.bitwise.bitwise_xor(h, h // 65536)
    return tf.where(h >= 2**31, h - 2**32, h)


def _hashing_graph(plan: Hashing, ctx: Context) -> Node:
    obj = plan.vectorizer
    refusal = _graph_refusal(obj)
    if refusal:
        raise NoForm(refusal)
    n_features = int(obj.n_features)
    dtype = np.dtype(obj.dtype)

    def run(frame: Any) -> Any:
        tf = g.tf()
        texts = _graph_documents(frame, ctx)
        n_rows = tf.shape(texts, out_type=tf.int64)[0]
        grams = _graph_terms(texts, obj, ctx)
        h = murmurhash3_32(grams.flat_values)
        most_negative = (2147483647 - (n_features - 1)) % n_features
        index = tf.where(h == -(2**31), tf.constant(most_negative, tf.int64),
                         tf.abs(h) % n_features)  # fmt: skip
        values = tf.ones_like(h, dtype=tf.float64)
        if obj.alternate_sign:
            values = tf.where(h >= 0, values, -values)
        counts = _sparse_counts(grams.value_rowids(), index, values, n_rows, n_features, dtype)
        if plan.binary:
            counts = tf.SparseTensor(
                counts.indices, tf.ones_like(counts.values), counts.dense_shape
            )
        if plan.norm is not None:
            counts = _graph_normalize(counts, plan.norm)
        return g.SparseBlock(counts, n_rows)

    return Node(run, n_features)


VECTORIZER = (
    "`lowercase`, `token_pattern` runs of word characters (`(?u)\\b\\w\\w+\\b`, "
    "`(?u)\\b\\w+\\b`), `analyzer` word/char/char_wb, `ngram_range`, `stop_words`, "
    "`binary`; not `strip_accents` or custom callables"
)
KINDS = (
    Kind(
        CountVectorizer,
        FAMILY,
        documents=True,
        refuse=refused_input,
        state=("_stop_words_id", "fixed_vocabulary_", "vocabulary_"),
        plan=_count_plan,
        replay=_count_replay,
        graph=_count_graph,
        rules=_text_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="the fitted vocabulary through a hash table; " + VECTORIZER,
    ),
    Kind(
        TfidfVectorizer,
        FAMILY,
        documents=True,
        refuse=refused_input,
        state=("_stop_words_id", "_tfidf", "fixed_vocabulary_", "vocabulary_"),
        plan=_count_plan,
        replay=_count_replay,
        graph=_count_graph,
        rules=_text_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="the vocabulary and `idf_`; `norm`, `use_idf`, `sublinear_tf`; " + VECTORIZER,
    ),
    Kind(
        HashingVectorizer,
        FAMILY,
        documents=True,
        refuse=refused_input,
        state=("_stop_words_id",),
        plan=_hashing_plan,
        replay=_hashing_replay,
        graph=_hashing_graph,
        rules=_text_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="MurmurHash3 in integer ops; `n_features`, `alternate_sign`, `norm`; "
        + VECTORIZER,
    ),
    Kind(
        TfidfTransformer,
        FAMILY,
        state=("idf_",),
        plan=_tfidf_transformer_plan,
        replay=_tfidf_transformer_replay,
        graph=_tfidf_transformer_graph,
        rules=lambda obj: StepRules(missing=REFUSED, infinity_refused=True),
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="`norm`, `use_idf`, `sublinear_tf` on a count matrix (sparse or dense)",
    ),
)
