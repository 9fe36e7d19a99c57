"""Datasets: generated 2-D toys, bundled digits, and user CSV files -> tensors with splits.

Every generator is plain torch driven by the run's data generator, so the same seed gives the
same points everywhere (the exporter copies these functions into its standalone script).
The 2-D sets live in roughly [-1, 1]^2; `noise` is the standard deviation of Gaussian jitter in
those units (or of the target, for regression).
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import torch

from ..core.errors import SpecError
from ..core.inputs import env_int, read_user_file, short, size_text
from ..core.portable import feature_matrix, keep_classes, split_indices
from ..core.portable import generator as make_generator
from ..core.registry import DATASETS, FEATURES, NORMALIZERS, Param
from .texts import NETLAB_TEXT


def _n(default, high=20000):
    return Param("n", default, "number of examples", low=10, high=high, log=True)


def _noise(default, high=1.0):
    return Param("noise", default, "std of the Gaussian noise", low=0.0, high=high)


def _classes(default):
    return Param("classes", default, "number of classes", low=2, high=8)


# ----------------------------------------------------------------------------- 2-D classification


@DATASETS.register("circle", "A disc of one class inside a ring of the other: no straight line "
                   "separates them.", (_n(400), _noise(0.05)), task="classification",
                   input="plane", classes=2)
def make_circle(generator, n, noise):
    inner = torch.arange(n) < n // 2
    radius = torch.where(inner, 0.5 * torch.rand(n, generator=generator),
                         0.7 + 0.3 * torch.rand(n, generator=generator))
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    x = x + noise * torch.randn(n, 2, generator=generator)
    return x, (~inner).long()


@DATASETS.register("xor", "Opposite quadrants share a class: the classic problem a single "
                   "perceptron cannot solve.", (_n(400), _noise(0.05)), task="classification",
                   input="plane", classes=2)
def make_xor(generator, n, noise):
    x = 2 * torch.rand(n, 2, generator=generator) - 1
    x = x + 0.1 * torch.sign(x)  # a small margin around the axes keeps the labels meaningful
    y = (x[:, 0] * x[:, 1] > 0).long()
    return x + noise * torch.randn(n, 2, generator=generator), y


@DATASETS.register("gaussians", "Round clusters, one per class: nearly linearly separable.",
                   (_n(400), _noise(0.15), _classes(3)), task="classification", input="plane",
                   linear=True)
def make_gaussians(generator, n, noise, classes):
    y = torch.arange(n) % classes
    angle = 2 * math.pi * y / classes
    centres = 0.6 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + noise * torch.randn(n, 2, generator=generator), y


@DATASETS.register("spiral", "Interleaved spiral arms, one per class: needs a curved, "
                   "non-linear boundary.", (_n(600), _noise(0.05), _classes(3)),
                   task="classification", input="plane", default=True)
def make_spiral(generator, n, noise, classes):
    y = torch.arange(n) % classes
    t = torch.rand(n, generator=generator)  # position along the arm: radius and turn
    angle = 2 * math.pi * y / classes + 4.0 * t
    x = torch.stack([t * torch.sin(angle), t * torch.cos(angle)], 1)
    return x + noise * torch.randn(n, 2, generator=generator), y


@DATASETS.register("moons", "Two interlocking half-moons.", (_n(400), _noise(0.08)),
                   task="classification", input="plane", classes=2)
def make_moons(generator, n, noise):
    y = (torch.arange(n) % 2).long()
    t = math.pi * torch.rand(n, generator=generator)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 0, upper, lower)
    x = 0.8 * (x - torch.tensor([0.5, 0.25]))
    return x + noise * torch.randn(n, 2, generator=generator), y


# ----------------------------------------------------------------------------- 2-D regression


@DATASETS.register("plane", "Regression: the target is a tilted plane, 0.6 x1 - 0.4 x2; a "
                   "linear model fits it exactly.", (_n(400), _noise(0.05)), task="regression",
                   input="plane", linear=True)
def make_plane(generator, n, noise):
    x = 2 * torch.rand(n, 2, generator=generator) - 1
    y = 0.6 * x[:, 0] - 0.4 * x[:, 1]
    return x, (y + noise * torch.randn(n, generator=generator))[:, None]


@DATASETS.register("multi_gaussian", "Regression: a landscape of positive and negative bumps; "
                   "needs hidden units to carve each bump.", (_n(600), _noise(0.05)),
                   task="regression", input="plane")
def make_multi_gaussian(generator, n, noise):
    x = 2 * torch.rand(n, 2, generator=generator) - 1
    centres = torch.tensor([[-0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [0.0, 0.0]])
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.5])
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    y = (signs * torch.exp(-d2 / (2 * 0.25 ** 2))).sum(1)
    return x, (y + noise * torch.randn(n, generator=generator))[:, None]


# ----------------------------------------------------------------------------- images and tables


@DATASETS.register("digits", "8x8 grey-scale handwritten digits 0-9 (1797 images bundled with "
                   "scikit-learn); pixel values 0-16.", (_n(1797, high=1797), _noise(0.0)),
                   task="classification", input="image", classes=10)
def make_digits(generator, n, noise):
    from sklearn.datasets import load_digits  # ships inside scikit-learn: no download
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    keep = torch.randperm(len(y), generator=generator)[:n]
    x, y = x[keep], y[keep]
    return x + 16.0 * noise * torch.randn(x.shape, generator=generator), y


SHAPES = ("horizontal bar", "vertical bar", "cross", "square")
GLYPH = 5  # each shape is drawn in a 5x5 box


def _glyphs() -> torch.Tensor:
    """The four 5x5 shapes, in the order of SHAPES."""
    g = torch.zeros(len(SHAPES), GLYPH, GLYPH)
    mid = GLYPH // 2
    g[0, mid, :] = 1                       # horizontal bar
    g[1, :, mid] = 1                       # vertical bar
    g[2, mid, :] = g[2, :, mid] = 1        # cross
    g[3, [0, -1], :] = g[3, :, [0, -1]] = 1  # hollow square
    return g


@DATASETS.register("shapes", "Four small shapes (horizontal bar, vertical bar, cross, square) "
                   "drawn on a dark canvas, each moved up to `shift` pixels from the centre: "
                   "the same pattern at many positions, where weight sharing pays.",
                   (_n(2000, high=20000), _noise(0.1),
                    Param("size", 16, "canvas width and height in pixels", low=8, high=32),
                    Param("shift", 4, "largest move from the centre, in pixels (0: always "
                          "centred)", low=0, high=13)),
                   task="classification", input="image", classes=len(SHAPES), class_names=SHAPES)
def make_shapes(generator, n, noise, size, shift):
    room = (size - GLYPH) // 2
    if shift > room:
        raise SpecError(f"data.shift={shift} would move a {GLYPH}x{GLYPH} shape off a "
                        f"{size}x{size} canvas: at most {room}")
    y = torch.randint(len(SHAPES), (n,), generator=generator)
    top = room + torch.randint(-shift, shift + 1, (n,), generator=generator)
    left = room + torch.randint(-shift, shift + 1, (n,), generator=generator)
    x = torch.zeros(n, 1, size, size)
    offsets = torch.arange(GLYPH)
    rows = (top[:, None, None] + offsets[None, :, None]).expand(n, GLYPH, GLYPH)
    cols = (left[:, None, None] + offsets[None, None, :]).expand(n, GLYPH, GLYPH)
    x[torch.arange(n)[:, None, None], 0, rows, cols] = _glyphs()[y]
    return x + noise * torch.randn(x.shape, generator=generator), y, {"classes": SHAPES}


def csv_delimiter(header):
    """Comma, semicolon or tab: whichever the header line holds most of outside quotes (ties go
    to the earlier, a one-column header means comma). The engine and the exported script both
    decide by this."""
    bare = "".join(header.split('"')[::2])  # the text outside quoted fields
    counts = {d: bare.count(d) for d in ",;\t"}
    best = max(",;\t", key=lambda d: counts[d])
    return best if counts[best] else ","


def load_csv(generator, path, target, task, ignore=()):
    """The other columns are the inputs (but those in `ignore`), `target` the output (no
    randomness: `generator` unused). The exported script's reader; the engine reads through
    read_csv, which checks everything first and says what is wrong."""
    import pandas as pd

    with open(path, encoding="utf-8-sig") as f:  # the first line that is not blank
        header = next((line for line in f if line.strip()), "")
    frame = pd.read_csv(path, sep=csv_delimiter(header), encoding="utf-8-sig")
    inputs = [c for c in frame.columns if c != target and c not in ignore]
    x = torch.tensor(frame[inputs].to_numpy(dtype="float32"))
    if task == "regression":
        return x, torch.tensor(frame[target].to_numpy(dtype="float32"))[:, None]
    codes, labels = pd.factorize(frame[target], sort=True)  # numbers in numeric order, text A-Z
    return x, torch.tensor(codes, dtype=torch.long)  # class k is the k-th label


@DATASETS.register("csv", "Your own table: numeric columns as inputs, one named column as the "
                   "target.", (Param("path", None, "CSV file to read"),
                               Param("target", None, "name of the target column"),
                               Param("task", "classification", "what to predict",
                                     choices=("classification", "regression")),
                               Param("ignore", (), "columns left out of the inputs", names=True)),
                   code=load_csv, input="table", upload="path", column="target",
                   leave_out="ignore")
def make_csv(generator, path, target, task, ignore):
    return read_csv_table(path, target, task, ignore=ignore)


MAX_CLASSES = 100
# Bounds on a user table, each checked before the work it guards. Measured before: a
# 160,000-column file took pandas 70 s and 1.7 GB; a path like http://... was fetched by pandas.
MAX_CSV_COLUMNS = 1_000
MAX_CSV_ROWS = 200_000
FLOAT32_MAX = 3.4028234663852886e38  # inputs become float32 tensors: larger values turn into inf
_QUOTED = re.compile(r'"[^"]*"')
_LINE_END = re.compile(r"[\r\n]")


def max_csv_bytes() -> int:
    """The size cap for a CSV file: NETLAB_MAX_CSV_MB megabytes, 50 by default (the web page
    passes its own, smaller cap)."""
    return env_int("NETLAB_MAX_CSV_MB", 50) << 20


def _is_number(v) -> bool:
    """True for a value that reads as a number (bools do not: a True/False column is not numeric)."""
    if isinstance(v, bool):
        return False
    try:
        float(v)
        return True
    except (TypeError, ValueError, OverflowError):
        return False


def _table_text(source, max_bytes: int) -> str:
    """The table's text: a path through engine.core.inputs.read_user_file (local regular files only,
    never a URL), or a file-like object or bytes, bounded to max_bytes either way."""
    if hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SpecError(f"data.path: the file is larger than {size_text(max_bytes)}, the most "
                            "allowed")
    elif isinstance(source, (bytes, bytearray)):
        data = source
    else:
        data = read_user_file(source, "data.path", max_bytes)
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"data.path: the file is not UTF-8 text (byte {e.start + 1} is not); "
                        "save it as CSV UTF-8") from None


def _first_record(text: str) -> str:
    """The header as pandas will read it: blank lines before it skipped, and a quoted field may
    span lines (counting on the first physical line let a leading blank line or a quoted newline
    slip a 500,000-column file past the column cap)."""
    start = 0
    while True:
        end = _LINE_END.search(text, start)
        line = text[start:end.start() if end else len(text)]
        if line.strip() or end is None:
            break
        start = end.end()
    pos = start
    while True:  # extend over line ends inside quotes (an odd number of quotes so far)
        end = _LINE_END.search(text, pos)
        if end is None:
            return text[start:]
        if text.count('"', start, end.start()) % 2 == 0:
            return text[start:end.start()]
        pos = end.end()


def _frame(text: str, rows: int):
    """Text -> DataFrame of at most `rows` data rows, the column count checked on the header
    line before pandas sees it. pandas reads from memory, never from a path or URL."""
    import pandas as pd

    header = _first_record(text)
    sep = csv_delimiter(header)
    columns = _QUOTED.sub("", header).count(sep) + 1
    if columns > MAX_CSV_COLUMNS:
        raise SpecError(f"data.path: the CSV has {columns:,} columns; at most "
                        f"{MAX_CSV_COLUMNS:,} are allowed")
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, nrows=rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise SpecError(f"data.path: cannot read the file as CSV "
                        f"({short(str(e).strip(), 200)[1:-1]})") from None


def read_table(source, max_bytes: int | None = None):
    """The one reader of a user's table: size, columns and rows bounded before the work each
    costs. Returns the DataFrame; `read_csv` then checks its contents."""
    frame = _frame(_table_text(source, max_csv_bytes() if max_bytes is None else max_bytes),
                   MAX_CSV_ROWS + 1)
    if len(frame) > MAX_CSV_ROWS:
        raise SpecError(f"data.path: the CSV has more than {MAX_CSV_ROWS:,} rows; at most "
                        f"{MAX_CSV_ROWS:,} are allowed")
    return frame


def csv_preview(source, max_bytes: int, rows: int = 5):
    """(first `rows` rows as a DataFrame, column names) for the page, with read_table's bounds
    and messages; the rest of the file is not parsed."""
    frame = _frame(_table_text(source, max_bytes), rows)
    return frame, [str(c) for c in frame.columns]


def _columns_text(columns) -> str:
    names = ", ".join(str(c) for c in list(columns)[:30])
    return short(names, 300)[1:-1] + (f" ({len(columns):,} columns)" if len(columns) > 30 else "")


def _first_line(mask) -> int:
    return int(mask.argmax()) + 2  # +2: the header is line 1, data starts at line 2


def read_csv(source, target: str, task: str, max_bytes: int | None = None, ignore=()):
    """Numeric table -> (x, y); see read_csv_table."""
    return read_csv_table(source, target, task, max_bytes, ignore)[:2]


# One piece on purpose: the checks of an outside file in the order they can fail (size,
# encoding, separator, header, columns, values), each with its own message.
def read_csv_table(source, target: str, task: str, max_bytes: int | None = None, ignore=()):
    """Table -> (x, y, names): names["inputs"] are the input columns, names["classes"] the class
    labels in class order (text labels become classes too, sorted; numbers in numeric order).
    Columns in `ignore` are left out. Every problem is reported by column name with what is
    allowed."""
    import numpy as np
    import pandas as pd

    if source is None or target is None:
        raise SpecError("the csv dataset needs data.path (the file) and data.target (a column name)")
    frame = read_table(source, max_bytes)
    if target not in frame.columns:
        raise SpecError(f"data.target: no column {short(target)}; the columns are "
                        f"{_columns_text(frame.columns)}")
    if len(frame) < 10:
        raise SpecError(f"the CSV has {len(frame)} rows; at least 10 are needed")
    for col in ignore:
        if col not in frame.columns or col == target:
            raise SpecError(f"data.ignore: {short(col)} is "
                            f"{'the target' if col == target else 'not a column'}; the columns "
                            f"to leave out are among {_columns_text(frame.columns)}")
    frame = frame[[c for c in frame.columns if c not in ignore]]
    labels_column = frame[target]
    text_labels = task == "classification" and (  # cat/dog, or True/False
        not pd.api.types.is_numeric_dtype(labels_column)
        or pd.api.types.is_bool_dtype(labels_column))
    for col in frame.columns:
        column = frame[col]
        if column.isna().any():
            raise SpecError(f"column {short(col)} has {int(column.isna().sum())} missing values "
                            f"(first at line {_first_line(column.isna().to_numpy())}); fill or "
                            "drop them (or leave the column out): only complete columns are "
                            "allowed")
        if col == target and text_labels:
            continue  # class names such as cat / dog
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            sample = next((v for v in column if not _is_number(v)), column.iloc[0])
            raise SpecError(f"column {short(col)} is not numeric (it holds values such as "
                            f"{short(sample, 40)}); input columns must be numeric (leave it out)"
                            + (", and a text target needs data.task 'classification'"
                               if col == target and task == "regression" else ""))
        with np.errstate(over="ignore"):
            too_big = ~np.isfinite(column.to_numpy(dtype="float64").astype("float32"))
        if too_big.any():  # inf, -inf, 1e400, or beyond float32 (the tensors' type)
            raise SpecError(f"column {short(col)} has {int(too_big.sum())} infinite values (first "
                            f"at line {_first_line(too_big)}); only finite numbers up to "
                            f"{FLOAT32_MAX:.1e} are allowed")
    inputs = [c for c in frame.columns if c != target]
    if not inputs:
        raise SpecError("the CSV needs at least one input column besides the target")
    for col in inputs:
        if frame[col].nunique() < 2:
            raise SpecError(f"column {short(col)} has the same value in every row, so it carries "
                            "no information; drop it")
    x = torch.tensor(frame[inputs].to_numpy(dtype="float32"))
    names = {"inputs": tuple(str(c) for c in inputs), "classes": None}
    if task == "regression":
        return x, torch.tensor(frame[target].to_numpy(dtype="float32"))[:, None], names
    values = frame[target].to_numpy()
    if not text_labels and (values != values.round()).any():
        raise SpecError(f"target column {short(target)} has non-integer values, so it cannot be a "
                        "class label; set data.task to 'regression' or use integer or text classes")
    codes, labels = pd.factorize(frame[target], sort=True)  # numbers in numeric order, text A-Z
    if not 2 <= len(labels) <= MAX_CLASSES:
        raise SpecError(f"target column {short(target)} has {len(labels)} distinct values; "
                        f"classification needs between 2 and {MAX_CLASSES}")
    names["classes"] = tuple(str(v) for v in labels)
    return x, torch.tensor(codes, dtype=torch.long), names


# ----------------------------------------------------------------------------- input features
# Hand-made features for the 2-D sets (concept A4): a linear model on x1^2 and x2^2 draws a circle.

@FEATURES.register("x1", "the first coordinate", label="x1", default=True)
def x1(p):
    return p[:, 0]


@FEATURES.register("x2", "the second coordinate", label="x2", default=True)
def x2(p):
    return p[:, 1]


@FEATURES.register("x1_sq", "x1 squared", label="x1²")
def x1_sq(p):
    return p[:, 0] ** 2


@FEATURES.register("x2_sq", "x2 squared", label="x2²")
def x2_sq(p):
    return p[:, 1] ** 2


@FEATURES.register("x1_x2", "x1 times x2: the XOR feature", label="x1·x2")
def x1_x2(p):
    return p[:, 0] * p[:, 1]


@FEATURES.register("sin_x1", "sin(3 x1)", label="sin(3x1)")
def sin_x1(p):
    return torch.sin(3 * p[:, 0])


@FEATURES.register("sin_x2", "sin(3 x2)", label="sin(3x2)")
def sin_x2(p):
    return torch.sin(3 * p[:, 1])


# ----------------------------------------------------------------------------- sequences


def _length(default, doc="steps in each sequence"):
    return Param("length", default, doc, low=2, high=1000, log=True)


@DATASETS.register("adding", "The adding problem: a sequence of random numbers in [0, 1], two of "
                   "them marked (one in each half); the target is their sum. Predicting 1 every "
                   "time gives an error of 1/6: a net must carry the first marked number across "
                   "the steps between.", (_n(2000), _length(30)),
                   task="regression", input="sequence")
def make_adding(generator, n, length):
    values = torch.rand(n, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    rows = torch.arange(n)
    marks = torch.zeros(n, length)
    marks[rows, first] = marks[rows, second] = 1.0
    x = torch.stack([values, marks], 2)
    return x, (values[rows, first] + values[rows, second])[:, None]


@DATASETS.register("sine", "Forecasting: a noisy sine wave of random frequency and phase; the "
                   "target is the next value after the sequence.", (_n(2000), _length(20),
                                                                   _noise(0.05)),
                   task="regression", input="sequence")
def make_sine(generator, n, length, noise):
    omega = 0.2 + 0.6 * torch.rand(n, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, generator=generator)
    t = torch.arange(length + 1, dtype=torch.float32)[None, :]
    wave = torch.sin(omega * t + phase)
    x = wave[:, :length] + noise * torch.randn(n, length, generator=generator)
    return x[:, :, None], wave[:, length:]


SYMBOLS = "ABCDEFGH"  # the copy task's alphabet; class 0 is the blank


@DATASETS.register("copy", "Memory: a few random letters, then `delay` blank steps, then a go "
                   "signal; the net must answer blank until the go signal and then repeat the "
                   "letters in order (an answer at every step).",
                   (_n(2000), _length(5, "letters to remember"),
                    Param("delay", 10, "blank steps between the letters and the go signal",
                          low=0, high=500)),
                   task="classification", input="sequence", targets="steps",
                   classes=len(SYMBOLS) + 1, class_names=("blank", *SYMBOLS))
def make_copy(generator, n, length, delay):
    letters = torch.randint(1, len(SYMBOLS) + 1, (n, length), generator=generator)
    steps = 2 * length + delay
    y = torch.zeros(n, steps, dtype=torch.long)
    y[:, length + delay:] = letters  # blank (0) until the recall
    shown = torch.zeros(n, steps, dtype=torch.long)
    shown[:, :length] = letters  # the input: the letters, then blanks
    x = torch.nn.functional.one_hot(shown, len(SYMBOLS) + 1).float()
    go = torch.zeros(n, steps, 1)
    go[:, length + delay:] = 1.0  # "repeat now"
    return torch.cat([x, go], 2), y, {"classes": ("blank", *SYMBOLS)}


@DATASETS.register("reverse", "Reversal: a sequence of random letters; at every step the answer is "
                   "the letter at the mirrored position (the first answer is the last letter), "
                   "so the first half of the answers depends on letters not yet read.",
                   (_n(2000), _length(8, "letters in each sequence")),
                   task="classification", input="sequence", targets="steps",
                   classes=len(SYMBOLS), class_names=tuple(SYMBOLS))
def make_reverse(generator, n, length):
    letters = torch.randint(0, len(SYMBOLS), (n, length), generator=generator)
    x = torch.nn.functional.one_hot(letters, len(SYMBOLS)).float()
    return x, letters.flip(1), {"classes": tuple(SYMBOLS)}


REBER = "BTPSXVE"  # the embedded Reber grammar's symbols
# Reber's grammar: state -> [(symbol, next state)]; 6 is the end
REBER_GRAPH = ((("T", 1), ("P", 2)), (("S", 1), ("X", 3)), (("T", 2), ("V", 4)),
               (("X", 2), ("S", 6)), (("P", 3), ("V", 6)))


def reber_string(generator) -> str:
    """One string of Reber's grammar, B ... E, each branch taken with probability 1/2."""
    out, state = "B", 0
    while state != 6:
        symbol, state = REBER_GRAPH[state][int(torch.randint(2, (), generator=generator))]
        out += symbol
    return out + "E"


@DATASETS.register("reber", "The embedded Reber grammar: B, then T or P, then a string of "
                   "Reber's grammar, then the same T or P again, then E. Half the strings have "
                   "the wrong letter at the second-to-last place; the net must say which are "
                   "grammatical, remembering the second letter across the whole string. Strings "
                   "differ in length: shorter ones are padded at the end.",
                   (_n(2000), Param("packed", True, "mark each string's real steps in a last "
                                    "feature, so recurrent layers keep their state over the "
                                    "padding (torch's packed sequences); off: they read the "
                                    "padding as input")),
                   task="classification", input="sequence", classes=2,
                   class_names=("wrong", "grammatical"), symbols=REBER)
def make_reber(generator, n, packed):
    strings, labels = [], []
    for _ in range(n):
        wrap = "TP"[int(torch.randint(2, (), generator=generator))]
        good = bool(torch.randint(2, (), generator=generator))
        close = wrap if good else "TP".replace(wrap, "")
        strings.append("B" + wrap + reber_string(generator) + close + "E")
        labels.append(int(good))
    steps = max(len(s) for s in strings)
    x = torch.zeros(n, steps, len(REBER) + 1)
    for i, s in enumerate(strings):
        x[i, torch.arange(len(s)), [REBER.index(c) for c in s]] = 1.0
        x[i, :len(s), -1] = 1.0  # the real steps
    if not packed:
        x = x[..., :-1]
    return x, torch.tensor(labels), {"classes": ("wrong", "grammatical")}


CHARS = tuple(sorted(set(NETLAB_TEXT)))  # the language model's alphabet, in class order
CHAR_NAMES = tuple({" ": "␣", "\n": "⏎"}.get(c, c) for c in CHARS)  # as the page shows them


@DATASETS.register("chars", "A character-level language model: windows of Netlab's own short "
                   "text (engine/data/texts.py); at every step the answer is the next character. "
                   "The text's end is held out, so validation reads sentences training never "
                   "saw.", (_length(32, "characters in each window"),
                            Param("stride", 3, "characters between two windows' starts",
                                  low=1, high=64)),
                   task="classification", input="tokens", targets="steps", ordered=True,
                   causal=True,
                   classes=len(CHARS), class_names=CHAR_NAMES, vocabulary=len(CHARS))
def make_chars(generator, length, stride):
    ids = torch.tensor([CHARS.index(c) for c in NETLAB_TEXT])
    starts = torch.arange(0, len(ids) - length, stride)
    windows = ids[starts[:, None] + torch.arange(length + 1)[None, :]]
    return windows[:, :-1], windows[:, 1:], {"classes": CHAR_NAMES}


# ----------------------------------------------------------------------------- the bundle


@dataclass
class Dataset:
    """Train/val/test tensors ready for the model, plus what is needed to encode new points."""

    task: str
    classes: int | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    features: tuple[str, ...] | None  # 2-D sets: feature keys computed from the raw point
    points: dict[str, torch.Tensor]  # 2-D sets: raw coordinates of each split, for plots
    input_names: tuple[str, ...] | None = None  # a table's input columns, in input order
    class_names: tuple[str, ...] | None = None  # a table's class labels, in class order
    symbols: str | None = None  # one-hot symbol sequences: the symbol of each input channel

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def out_dim(self) -> int:
        return self.classes if self.task == "classification" else self.y_train.shape[1]

    @property
    def blank(self) -> torch.Tensor:
        """The model input of an empty image, every raw pixel 0 after normalising: what
        augmentation moves in from outside an image and what the occlusion map covers with."""
        return (-self.shift / self.scale).reshape(self.in_shape)

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw inputs (2-D points for the plane sets) -> the normalised model input."""
        if self.features is not None:
            raw = features_of(raw, self.features)
        return (raw.to(self.shift.device) - self.shift) / self.scale

    def to(self, device) -> "Dataset":
        moved = {k: getattr(self, k).to(device) for k in
                 ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "shift", "scale")}
        return Dataset(**{**self.__dict__, **moved})


def features_of(points: torch.Tensor, features) -> torch.Tensor:
    """The model inputs for 2-D points: one column per feature key."""
    return feature_matrix(points, [FEATURES[f].factory for f in features])


def split(n: int, val_fraction: float, test_fraction: float, generator, ordered=False):
    """(train, val, test) indices; refuses fractions that leave nothing to train on."""
    if n - round(n * test_fraction) - round(n * val_fraction) < 1:
        raise SpecError(f"with {n} examples the val/test fractions leave nothing to train on")
    return split_indices(n, val_fraction, test_fraction, generator, ordered)


def fold_split(train, val, i: int, k: int):
    """k-fold cross-validation over the examples that train and validation share (the test
    split stays apart): their shuffled indices cut into k nearly equal folds, fold i validates
    and the other k - 1 train. Across i = 0..k-1 the folds are disjoint and cover them all."""
    pool = torch.cat([train, val])
    if not 2 <= k <= len(pool) or not 0 <= i < k:
        raise SpecError(f"fold {i} of {k}: k must be between 2 and the {len(pool)} examples "
                        "that train and validation share")
    folds = pool.tensor_split(k)
    return torch.cat([f for j, f in enumerate(folds) if j != i]), folds[i]


def named_subset(x, y, names: dict, subset):
    """portable.keep_classes, with the class names following (a set without names is named by
    its labels: digits' "7")."""
    if int(y.max()) < max(subset):
        raise SpecError(f"data.subset={list(subset)}: the labels go up to {int(y.max())}")
    all_names = names.get("classes") or tuple(str(c) for c in range(int(y.max()) + 1))
    return (*keep_classes(x, y, subset),
            {**names, "classes": tuple(all_names[c] for c in subset)})


def fit_rows(x: torch.Tensor) -> torch.Tensor:
    """What input scaling is fitted on: the examples, and for sequences (examples, steps,
    features) every step of every example, so each feature gets one shift and scale at all
    steps (a per-step scale would blank a signal that is constant at a step, like a go flag)."""
    return x.flatten(0, 1) if x.dim() == 3 else x


def load_dataset(data, seed: int, scaling=None, fold: tuple[int, int] | None = None) -> Dataset:
    """DataSpec + seed -> Dataset. Normalisation statistics come from the train split only, or
    are `scaling` = (shift, scale) when given (a fine-tuned model sees its inputs scaled as
    they were while it pretrained). `data.seed`, when set, draws the data instead of `seed`.
    fold = (i, k): k-fold cross-validation's fold i is the validation split (see fold_split)."""
    gen = make_generator(seed if data.seed is None else data.seed, "data")
    entry = DATASETS[data.name]
    raw_x, y, *more = entry.factory(gen, **data.params)
    names = more[0] if more else {}  # a table's column and class names
    task = data.task_kind
    if data.subset is not None:
        raw_x, y, names = named_subset(raw_x, y, names, data.subset)
    classes = int(y.max()) + 1 if task == "classification" else None
    if task == "classification" and data.classes is not None and classes > data.classes:
        raise SpecError(f"data.classes={data.classes} but the labels go up to {classes - 1}")
    if task == "classification":
        classes = data.classes or classes
    x = features_of(raw_x, data.features) if data.features else raw_x
    train, val, test = split(len(y), data.val_fraction, data.test_fraction, gen,
                             bool(entry.tags.get("ordered")))
    if fold is not None:
        if entry.tags.get("ordered"):
            raise SpecError(f"k-fold cross-validation needs examples that stand alone; "
                            f"{data.name!r} cuts overlapping windows from one sequence, so "
                            "every fold would share them with the others")
        train, val = fold_split(train, val, *fold)
    if entry.tags.get("input") == "tokens":  # ids, not measurements: nothing to scale
        shift, scale = torch.zeros(()), torch.ones(())
    else:
        shift, scale = scaling or NORMALIZERS[data.normalize].factory(fit_rows(x[train]))
        x = (x - shift) / scale
    points = {name: raw_x[idx] for name, idx in (("train", train), ("val", val), ("test", test))} \
        if data.features else {}
    return Dataset(task, classes, x[train], y[train], x[val], y[val], x[test], y[test],
                   shift, scale, data.features, points, names.get("inputs"), names.get("classes"),
                   entry.tags.get("symbols"))
