"""The input contract of a bundle: infer it from an example, validate and coerce raw input.

At prediction time every raw input passes through `InputSchema.coerce` first::

    raw -> schema.coerce(raw) -> canonical -> preprocess steps -> model

`coerce` turns every accepted raw form into ONE canonical form, or raises `SchemaError`
listing every problem it found before anything downstream sees the data. Canonical forms:

- tabular: a DataFrame with exactly the training columns, in training order, each in its
  training dtype, with the missing-value sentinel training used (NaN or None);
- array: an ndarray of shape ``(n, *per_sample_shape)`` in the training dtype;
- image: as array; image sources are first decoded by the recorded loader (`ImageInput`);
- multi: a dict ``{model input name: canonical form of that input}``.

Accepted raw forms
------------------
| schema  | raw input                                 | read as                             |
|---------|-------------------------------------------|-------------------------------------|
| tabular | pandas DataFrame                          | columns by name                     |
| tabular | list of dicts (JSON records)              | one row per dict, columns by name   |
| tabular | dict of column -> list/array (columnar)   | columns by name                     |
| tabular | dict of column -> value, pandas Series    | one row, columns by name            |
| tabular | 2-D ndarray, list of lists                | columns by POSITION, training order |
| tabular | 1-D ndarray or list as wide as the table  | one row, columns by position        |
| array   | ndarray, (nested) list, scalar            | as an array                         |
| array   | DataFrame or Series (1-D samples only)    | to_numpy(), columns by position     |
| image   | any array form above                      | as an array                         |
| image   | path, URL, glob, folder, encoded bytes,   | decoded as training's loader read   |
|         | PIL image, or a list of them              | them (`bundle.fileio.images`)       |
| multi   | dict of model input name -> any of above  | each input by its own schema        |

Empty input (0 rows) gives an empty canonical result with the training columns or shape.

Coercions (all lossless; anything not listed is refused)
--------------------------------------------------------
| from                                   | to                     | only when                   |
|----------------------------------------|------------------------|-----------------------------|
| bool, int                              | float                  | always                      |
| float64                                | float32 (or float16)   | every finite value is in    |
|                                        |                        | the target's finite range   |
| int, bool                              | narrower int, uint8... | every value fits the target |
| float                                  | int                    | every value is a whole      |
|                                        |                        | number that fits (JSON 3.0; |
|                                        |                        | nulls make ints float)      |
| object/str holding numbers ("3.5")     | float, int             | EVERY non-missing value     |
|                                        |                        | converts ("nan", "" do not) |
| pandas nullable (Int64, Float64,       | the training dtype     | always; pd.NA becomes the   |
| boolean, string), pyarrow-backed       |                        | training missing value      |
| None, NaN, pd.NA in a text column      | the training sentinel  | always: None or NaN, as     |
|                                        |                        | training used (NaN if none) |
| text in any string or categorical dtype| the training text dtype| every value is a str        |
| any values                             | the training category  | every value is one of its   |
|                                        |                        | categories                  |
| datetimes of any unit or timezone      | the training datetime  | same instants (tz converted)|
|                                        |                        | and precision; naive<->aware|
|                                        |                        | is refused                  |
| ISO-8601 strings, datetime objects     | the training datetime  | every value parses          |
| int column, allowed missing values     | float64 with NaN       | as pandas itself reads it   |
| bool column, allowed missing values    | object with NaN        | as pandas itself reads it   |
| one sample without the batch axis      | a batch of one         | ndim == per-sample ndim     |
| DataFrame columns in another order     | training order         | always, by name             |
| columns the bundle does not know       | dropped                | with ONE ExtraColumnsWarning|
|                                        |                        | (strict=True refuses them)  |

Nothing is reshaped, rounded, clipped, parsed or re-encoded otherwise.

Refusals
--------
Each is a `SchemaError` naming the column or axis, what was expected, what came, and a
remedy; `coerce` reports all of them at once (``err.problems``), lists capped at 5.

- missing columns (all of them; "did you mean" only when unambiguous); unknown columns
  with ``strict=True``; a column name given twice;
- positional input of the wrong width; array samples of the wrong shape, with a reshape or
  moveaxis hint only when the values exactly fit the expected shape;
- values that are not numbers, whole numbers, booleans, strings or datetimes (the first
  ones, with their positions);
- missing values where training had none and no preprocessing step imputes them;
- values an encoder with ``handle_unknown='error'`` (or a categorical dtype) never saw;
- values outside the training dtype's range (float32 overflow, integer overflow);
- datetimes: naive where training was timezone-aware (or the reverse), lost precision;
- multi-input: missing or unknown input names, inputs with different numbers of rows;
- raw input of an unsupported type (the message lists the accepted ones).
"""

from __future__ import annotations

from .arrays import ArraySchema
from .base import InputSchema
from .columns import ColumnSpec
from .dtypes import ALL_ARRAYS, KINDS, MAX_CATEGORIES
from .images import ImageInput, ImageSchema, is_image_source
from .infer import infer_schema, schema_from_hints
from .multi import MultiInputSchema
from .names import NameConflict, match_by_text
from .rows import concat_rows, n_rows, slice_rows
from .tabular import TabularSchema

__all__ = [
    "ALL_ARRAYS",
    "KINDS",
    "MAX_CATEGORIES",
    "ArraySchema",
    "ColumnSpec",
    "ImageInput",
    "ImageSchema",
    "InputSchema",
    "MultiInputSchema",
    "NameConflict",
    "TabularSchema",
    "concat_rows",
    "infer_schema",
    "is_image_source",
    "match_by_text",
    "n_rows",
    "schema_from_hints",
    "slice_rows",
]
