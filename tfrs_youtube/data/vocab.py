"""`Vocabulary`: string IDs sorted by descending frequency, with their counts.

The order matters: position 0 is the most frequent ID, which is what the
log-uniform (Zipfian) candidate sampler assumes, and the counts feed the unigram sampler and the
logQ correction of the sampled softmax (paper section 3.1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["Vocabulary"]


def _as_object_strings(values: Any) -> np.ndarray:
    array = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
    if array.dtype == object and pd.api.types.infer_dtype(array, skipna=False) == "string":
        return array
    return array.astype(str).astype(object)


def _check_ids(ids: Any, name: str) -> np.ndarray:
    """`ids` as a 1-D object array of distinct, non-empty str, or a TypeError/ValueError."""
    is_sequence = isinstance(ids, (Sequence, pd.Series, pd.Index)) or (
        isinstance(ids, np.ndarray) and ids.ndim == 1
    )
    if isinstance(ids, (str, bytes)) or not is_sequence:
        shown = f"{name}={ids!r:.80}" if isinstance(ids, (str, bytes)) else (
            f"{name} of type {type(ids).__name__}"
        )
        raise TypeError(
            f"`{name}` must be a sequence of str video IDs (a list, tuple or 1-D array), not a "
            f"single string. Received: {shown}"
        )
    if not len(ids):
        raise ValueError(f"`{name}` must not be empty. Received: {name}=[]")
    array = np.empty(len(ids), dtype=object)
    array[:] = list(ids)
    if pd.api.types.infer_dtype(array, skipna=False) != "string":
        position = next(i for i, v in enumerate(array) if not isinstance(v, str))
        value = array[position]
        raise TypeError(
            f"`{name}` must hold str video IDs; cast them with str(). Received: {value!r} "
            f"({type(value).__name__}) at position {position}"
        )
    if (array == "").any():
        raise ValueError(
            f'`{name}` must not contain "" (the padding of watch histories). Received: "" at '
            f"position {int(np.argmax(array == ''))}"
        )
    index = pd.Index(array)
    if not index.is_unique:
        raise ValueError(
            f"`{name}` must be distinct IDs. Received: repeated "
            f"{index[index.duplicated()].unique()[:5].tolist()}"
        )
    return array


class Vocabulary:
    """Frequency-sorted string IDs with their counts.

    Build one with `Vocabulary.from_values` from the observed IDs (for example every training
    watch). IDs are sorted by descending count, ties broken by ascending ID, so the result is
    deterministic. Positions (`index`) are what embedding tables and samplers use.

    Args:
        ids: sequence of distinct string IDs, sorted by non-increasing count.
        counts: sequence of non-negative integer counts, one per ID. Defaults to all zeros.

    Attributes:
        ids: np.ndarray of object dtype (str), shape (len,).
        counts: np.ndarray of int64, shape (len,).

    Raises:
        ValueError: if IDs repeat, counts are negative, of another length, or increasing.

    Example:

    >>> vocab = Vocabulary.from_values(["b", "a", "b", "c", "a", "b"], extra_ids=["z"])
    >>> vocab.ids.tolist(), vocab.counts.tolist()
    (['b', 'a', 'c', 'z'], [3, 2, 1, 0])
    >>> vocab.index(["c", "b", "nope"], unknown=-1).tolist()
    [2, 0, -1]
    >>> vocab.lookup([1, -1]).tolist()
    ['a', '']
    """

    def __init__(self, ids: Iterable[str], counts: Iterable[int] | None = None) -> None:
        self.ids = _as_object_strings(list(ids) if not hasattr(ids, "__len__") else ids).ravel()
        if counts is None:
            counts = np.zeros(len(self.ids), dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64).ravel()
        if len(self.counts) != len(self.ids):
            raise ValueError(
                f"`counts` must have one entry per id ({len(self.ids)}). "
                f"Received: {len(self.counts)} counts"
            )
        if (self.counts < 0).any():
            raise ValueError(
                f"`counts` must be non-negative. Received: min count {int(self.counts.min())}"
            )
        if (np.diff(self.counts) > 0).any():
            raise ValueError(
                "`ids` must be sorted by descending count (use Vocabulary.from_values). "
                f"Received: counts {self.counts[:10].tolist()}..."
            )
        self._index = pd.Index(self.ids)
        if not self._index.is_unique:
            raise ValueError(
                "`ids` must be distinct. Received: repeated ids "
                f"{self._index[self._index.duplicated()].unique()[:5].tolist()}"
            )

    @classmethod
    def from_values(cls, values: Iterable[Any], extra_ids: Iterable[Any] = ()) -> "Vocabulary":
        """Counts `values` and sorts IDs by descending count, then ascending ID.

        Args:
            values: the observed IDs (any iterable or array; cast to str).
            extra_ids: IDs to include even if never observed; unseen ones get count 0 and
                come last. Defaults to ().

        Returns:
            A `Vocabulary`.
        """
        values = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
        is_strings = pd.api.types.infer_dtype(values, skipna=False) == "string"
        if values.dtype == object and not is_strings and pd.isna(values).any():
            raise ValueError("`values` must not contain None/NaN.")
        values = _as_object_strings(values).ravel()
        extra = _as_object_strings(list(extra_ids)).ravel()
        codes, uniques = pd.factorize(np.concatenate([values, extra]))
        uniques = np.asarray(uniques, dtype=object)
        counts = np.bincount(codes[: len(values)], minlength=len(uniques)).astype(np.int64)
        ascending = np.argsort(uniques, kind="stable")
        order = ascending[np.argsort(-counts[ascending], kind="stable")]  # ties: ascending id
        return cls(uniques[order], counts[order])

    @classmethod
    def from_catalogue(
        cls, ids: Sequence[str], values: Iterable[Any] = (), name: str = "ids"
    ) -> "Vocabulary":
        """The IDs of a catalogue, sorted like `from_values` by their count in `values`.

        Values outside the catalogue are not counted; catalogue IDs never observed get count 0
        and come last (the catalogue is the training videos, or an explicit catalogue).

        Args:
            ids: non-empty sequence of distinct, non-empty str IDs (list, tuple, 1-D array).
            values: the observed IDs to count (e.g. every training watch). Defaults to ().
            name: how error messages call `ids`. Defaults to "ids".

        Returns:
            A `Vocabulary` holding exactly `ids`.

        Raises:
            TypeError: if `ids` is a single string, not a sequence, or holds non-str values.
            ValueError: if `ids` is empty, contains "" or repeats an ID.

        Example:

        >>> vocab = Vocabulary.from_catalogue(["c", "a", "z"], ["a", "b", "a", "c"])
        >>> vocab.ids.tolist(), vocab.counts.tolist()  # b is outside the catalogue
        (['a', 'c', 'z'], [2, 1, 0])
        """
        catalogue = _check_ids(ids, name)
        counted = cls.from_values(values, extra_ids=catalogue)
        keep = pd.Index(catalogue).get_indexer(counted.ids) >= 0
        return cls(counted.ids[keep], counted.counts[keep])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, value: object) -> bool:
        return str(value) in self._index

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self.ids[:3])
        return f"Vocabulary(size={len(self)}, ids=[{head}{', ...' if len(self) > 3 else ''}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return bool(
            np.array_equal(self.ids, other.ids) and np.array_equal(self.counts, other.counts)
        )

    def index(self, values: Any, unknown: str | int = "error", name: str = "values") -> np.ndarray:
        """Positions of `values` (any shape) as int64, vectorized.

        Args:
            values: IDs to look up, scalar or array of any shape.
            unknown: "error" (default) raises on IDs not in the vocabulary; an int maps them
                to that int (e.g. -1).
            name: how the error message calls `values`. Defaults to "values".

        Returns:
            np.ndarray of int64 with the shape of `values`.

        Raises:
            ValueError: on unknown IDs with `unknown="error"`, or an invalid `unknown`.
        """
        if isinstance(unknown, bool) or not (unknown == "error" or isinstance(unknown, int)):
            raise ValueError(f'`unknown` must be "error" or an int. Received: unknown={unknown!r}')
        array = _as_object_strings(values)
        flat = array.ravel()
        positions = self._index.get_indexer(flat).astype(np.int64)
        missing = positions < 0
        if missing.any():
            if unknown == "error":
                shown = pd.unique(flat[missing])[:5].tolist()
                raise ValueError(
                    f"`{name}` has {int(missing.sum())} id(s) not in the vocabulary. "
                    f"Received: {shown}. Pass unknown=-1 to map them to -1."
                )
            positions[missing] = unknown
        return positions.reshape(array.shape)

    def lookup(self, positions: Any) -> np.ndarray:
        """IDs at `positions` (any shape; -1 gives "") as an object array of str.

        Raises:
            ValueError: if a position is outside [-1, len).
        """
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < -1 or positions.max() >= len(self)):
            raise ValueError(
                f"`positions` must be in [-1, {len(self)}). Received: min {positions.min()}, "
                f"max {positions.max()}"
            )
        padded = np.append(self.ids, np.array([""], dtype=object))
        return padded[np.where(positions < 0, len(self), positions)]

    def probabilities(self) -> np.ndarray:
        """Counts divided by their sum (float64), the unigram distribution.

        Raises:
            ValueError: if all counts are zero.
        """
        total = self.counts.sum()
        if total <= 0:
            raise ValueError("The vocabulary has no counts (all zero); probabilities undefined.")
        return self.counts / total

    def to_dict(self) -> dict[str, list]:
        """A JSON-safe dict `{"ids": [...], "counts": [...]}`."""
        return {"ids": [str(i) for i in self.ids], "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, config: dict[str, list]) -> "Vocabulary":
        """Inverse of `to_dict`.

        Raises:
            ValueError: if `config` lacks "ids".
        """
        if not isinstance(config, dict) or "ids" not in config:
            raise ValueError(
                f'`config` must be a dict with "ids" and "counts". Received: {config!r:.80}'
            )
        return cls(np.asarray(config["ids"], dtype=object), config.get("counts"))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary to `path` as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Reads a vocabulary written by `save`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
