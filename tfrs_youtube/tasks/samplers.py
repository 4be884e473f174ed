"""Candidate samplers for sampled softmax (Covington et al. 2016, section 3.1).

A sampler draws the negatives of one training step, shared by every row of the batch, and
reports their expected count `Q_j`: how many times class `j` is expected among the negatives of
one step. The sampled-softmax task subtracts `log Q_j` from the logits (Bengio and Senecal's
importance-weighting correction, as in `tf.nn.sampled_softmax_loss`).

All built-in samplers draw WITH replacement, so `Q_j = num_sampled * p_j` exactly. `log Q` is
computed in log space in float64, with no `1e-6` floor: at rank one million the log-uniform
probability is about `7e-8`, and clipping it would flatten the correction for the whole tail.
The one floor is for classes of count 0 in `candidate_counts`: their `log Q` is that of a
single observation (see `_log_probabilities`), so such a label still gets a loss and a gradient.
Drawing costs `O(M)` or `O(M log N)`, never `O(N)`.

Seeds. `sample(num_sampled, labels, seed)` takes either an int op seed (or None), which draws
with TensorFlow's stateful random ops, or a stateless seed: an int tensor of shape `(2,)`.
`SampledSoftmaxRetrieval` always passes a stateless seed derived from its own seed, the
training step and the replica id, so that every replica of a `tf.distribute` strategy and
every step draws its own negatives, and a run resumed from a checkpoint draws the same ones as
an uninterrupted run. The built-in samplers then use `tf.random.stateless_uniform`; a sampler
of your own can do the same with `random_uniform`, which accepts either kind of seed.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.config import SAMPLERS

__all__ = [
    "CandidateSampler",
    "UniformSampler",
    "LogUniformSampler",
    "UnigramSampler",
    "InBatchSampler",
    "MixedSampler",
    "SAMPLERS",
    "get_sampler",
    "is_stateless_seed",
    "random_uniform",
]


def is_stateless_seed(seed) -> bool:
    """True if `seed` is a stateless seed (an int tensor or array of shape `(2,)`).

    >>> is_stateless_seed(tf.constant([1, 2])), is_stateless_seed(3), is_stateless_seed(None)
    (True, False, False)
    """
    if seed is None or isinstance(seed, (int, np.integer)):
        return False
    shape = getattr(seed, "shape", None)
    if shape is None:
        shape = np.shape(seed)
    return tuple(tf.TensorShape(shape).as_list()) == (2,)


def random_uniform(shape, seed=None, dtype=tf.float64, minval=0, maxval=None) -> tf.Tensor:
    """`tf.random.uniform`, or `tf.random.stateless_uniform` when `seed` is stateless.

    Args:
        shape: shape of the draw.
        seed: None or an int op seed (stateful draw), or an int tensor of shape `(2,)`
            (stateless draw: the same seed gives the same values, on any device).
        dtype: float or int dtype. Defaults to float64.
        minval: lower bound (inclusive). Defaults to 0.
        maxval: upper bound (exclusive); required for int dtypes. Defaults to None (1 for
            floats).

    >>> a = random_uniform([3], seed=tf.constant([4, 2], tf.int64))
    >>> b = random_uniform([3], seed=tf.constant([4, 2], tf.int64))
    >>> bool(tf.reduce_all(a == b))
    True
    """
    if is_stateless_seed(seed):
        seed = tf.cast(seed, tf.int64)
        return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)
    return tf.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed)


def _check_counts(candidate_counts, num_candidates: int) -> np.ndarray:
    counts = np.asarray(candidate_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.shape[0] != num_candidates:
        raise ValueError(
            "`candidate_counts` must hold one count per candidate, i.e. have shape "
            f"({num_candidates},) for num_candidates={num_candidates}. "
            f"Received: candidate_counts of shape {counts.shape}"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        bad = counts[~(np.isfinite(counts) & (counts >= 0))][:5].tolist()
        raise ValueError(
            "`candidate_counts` must be finite and non-negative. "
            f"Received: candidate_counts with entries {bad}"
        )
    if counts.sum() <= 0:
        raise ValueError("`candidate_counts` must not be all zero. Received: all-zero counts")
    return counts


def _log_probabilities(counts: np.ndarray, distortion: float = 1.0) -> np.ndarray:
    """`log p_j` of `counts ** distortion` in float64, a count of 0 counting as one observation.

    `log p_j = log(c'_j ** distortion / sum_k c_k ** distortion)` with `c'_j = 1` where
    `c_j = 0` and `c'_j = c_j` elsewhere (for integer counts, `c'_j = max(c_j, 1)`). The
    denominator is unchanged, so every class of non-zero count keeps its exact probability.
    Without the floor a label of count 0 would get `log Q` of about -87 (float32 tiny): its
    corrected true logit would dwarf every negative and its loss and gradient would vanish.
    """
    floored = np.where(counts > 0, counts, 1.0)
    return distortion * np.log(floored) - np.log(np.sum(counts**distortion))


def _unknown_log_q(ids: tf.Tensor) -> tf.Tensor:
    """NaN log Q for samplers whose data frequencies were not given (see InBatchSampler)."""
    return tf.fill(tf.shape(ids), tf.constant(float("nan"), tf.float32))


class CandidateSampler:
    """Base class of the negative samplers used by `SampledSoftmaxRetrieval`.

    Subclass it to write your own sampler: implement `sample` and `log_expected_count` with
    TensorFlow ops only (they run inside `tf.function`), and `get_config` if the sampler has
    constructor arguments beyond `num_candidates`. To keep a task that uses it
    config-serializable, register the subclass with
    `tf.keras.utils.register_keras_serializable`.

    Args:
        num_candidates: int. Size `N` of the catalogue; ids are in `[0, N)`.

    Example:

    >>> sampler = UniformSampler(num_candidates=1000)
    >>> ids, log_q = sampler.sample(8, labels=tf.constant([3, 4]), seed=1)
    >>> ids.shape, ids.dtype, log_q.dtype
    (TensorShape([8]), tf.int64, tf.float32)
    >>> round(float(log_q[0]), 4)  # log(8 / 1000)
    -4.8283
    """

    def __init__(self, num_candidates: int) -> None:
        self.num_candidates = check_int("num_candidates", num_candidates, 1)

    def sample(
        self, num_sampled: int, labels: tf.Tensor, seed: Optional[int] = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Draws the negatives of one step, shared across the batch.

        Args:
            num_sampled: int. Number of negatives `S` to draw.
            labels: int tensor of shape `(batch_size,)`: the batch's true ids.
            seed: None, an int op seed (stateful draw), or an int tensor of shape `(2,)`:
                a stateless seed, which the task passes (see the module docstring). Draw
                with `random_uniform(..., seed=seed)` to accept both.

        Returns:
            `(ids, log_q)`: int64 ids of shape `(M,)` and float32 `log Q` of shape `(M,)`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `sample`.")

    def log_expected_count(
        self, ids: tf.Tensor, num_sampled: int, labels: tf.Tensor
    ) -> tf.Tensor:
        """`log Q_j`: log of the expected number of times `j` is among one step's negatives.

        Args:
            ids: int tensor of shape `(K,)`.
            num_sampled: int. Number of negatives `S` drawn per step.
            labels: int tensor of shape `(batch_size,)`: the batch's true ids.

        Returns:
            float32 tensor of shape `(K,)`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `log_expected_count`.")

    def get_config(self) -> dict:
        return {"num_candidates": self.num_candidates}

    @classmethod
    def from_config(cls, config: dict) -> "CandidateSampler":
        return cls(**config)


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class UniformSampler(CandidateSampler):
    """Uniform negatives, `p_j = 1 / N`."""

    def sample(self, num_sampled, labels, seed=None):
        ids = random_uniform([num_sampled], seed, tf.int64, 0, self.num_candidates)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        value = math.log(num_sampled) - math.log(self.num_candidates)
        return tf.fill(tf.shape(ids), tf.constant(value, tf.float32))


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class LogUniformSampler(CandidateSampler):
    """Zipfian negatives over a vocabulary sorted by descending frequency.

    `p(k) = log((k + 2) / (k + 1)) / log(N + 1)`, the law of
    `tf.random.log_uniform_candidate_sampler`, drawn by inverse CDF in `O(M)`:
    `k = floor(exp(U log(N + 1))) - 1`. `log p` goes through `log1p` so that tail ranks keep
    their full precision.
    """

    def sample(self, num_sampled, labels, seed=None):
        u = random_uniform([num_sampled], seed, tf.float64)
        ranks = tf.floor(tf.exp(u * math.log(self.num_candidates + 1.0))) - 1.0
        ids = tf.clip_by_value(tf.cast(ranks, tf.int64), 0, self.num_candidates - 1)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        k = tf.cast(ids, tf.float64)
        log_p = tf.math.log(tf.math.log1p(1.0 / (k + 1.0))) - math.log(
            math.log(self.num_candidates + 1.0)
        )
        return tf.cast(log_p + math.log(num_sampled), tf.float32)


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class UnigramSampler(CandidateSampler):
    """Negatives drawn in proportion to `candidate_counts ** unigram_distortion`.

    The CDF is built once in float64 and sampled with `tf.searchsorted` on float64 uniforms
    (`O(M log N)`), so a class of probability `1e-8` in a catalogue of a million is still drawn
    at its rate and its `log p` is exact. Classes of count 0 are never drawn; as labels they
    get the probability of one observation, `log p_j = log(1 / sum_k c_k ** distortion)`, so
    their `log Q` is finite and they still learn (a floor at float32 tiny would give
    `log Q ~ -87` and a loss of ~0).

    Args:
        num_candidates: int. Size `N` of the catalogue.
        candidate_counts: sequence of `N` non-negative numbers (e.g. training frequencies).
        unigram_distortion: float > 0. Power applied to the counts (word2vec uses 0.75).
            Defaults to 1.0.
    """

    def __init__(self, num_candidates, candidate_counts, unigram_distortion=1.0):
        super().__init__(num_candidates)
        if not unigram_distortion > 0:
            raise ValueError(
                "`unigram_distortion` must be > 0. "
                f"Received: unigram_distortion={unigram_distortion!r}"
            )
        self.candidate_counts = _check_counts(candidate_counts, self.num_candidates)
        self.unigram_distortion = float(unigram_distortion)
        weights = self.candidate_counts**self.unigram_distortion
        cumulative = np.cumsum(weights)
        # Dividing by the last entry makes the final CDF value exactly 1.0, so a uniform in
        # [0, 1) never lands past the last class of non-zero weight.
        self._cdf = tf.constant(cumulative / cumulative[-1], tf.float64)
        self._log_p = tf.constant(
            _log_probabilities(self.candidate_counts, self.unigram_distortion), tf.float64
        )

    def sample(self, num_sampled, labels, seed=None):
        u = random_uniform([num_sampled], seed, tf.float64)
        ids = tf.searchsorted(self._cdf, u, side="right", out_type=tf.int64)
        ids = tf.minimum(ids, self.num_candidates - 1)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        log_p = tf.gather(self._log_p, ids)
        return tf.cast(log_p + math.log(num_sampled), tf.float32)

    def get_config(self):
        return {
            "num_candidates": self.num_candidates,
            "candidate_counts": self.candidate_counts.tolist(),
            "unigram_distortion": self.unigram_distortion,
        }


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class InBatchSampler(CandidateSampler):
    """The batch's labels are the negatives (`M = B`; `num_sampled` is ignored).

    `Q_j = B * p_data(j)` with `p_data(j) = c_j / sum_k c_k` for `c = candidate_counts`. A
    label of count 0 (seen in training but not in the counts) is given one observation,
    `p_data(j) = 1 / sum_k c_k`, so its `log Q` stays finite. Without `candidate_counts` the
    expected counts are unknown: `sample` then returns NaN for `log_q` (use it only with
    `logq_correction=False`) and `log_expected_count` raises ValueError.
    """

    def __init__(self, num_candidates, candidate_counts=None):
        super().__init__(num_candidates)
        self.candidate_counts, self._log_p_data = None, None
        if candidate_counts is not None:
            self.candidate_counts = _check_counts(candidate_counts, self.num_candidates)
            self._log_p_data = tf.constant(_log_probabilities(self.candidate_counts), tf.float64)

    def sample(self, num_sampled, labels, seed=None):
        ids = tf.cast(tf.reshape(labels, [-1]), tf.int64)
        if self._log_p_data is None:
            return ids, _unknown_log_q(ids)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        if self._log_p_data is None:
            raise ValueError(
                "The in-batch sampler needs `candidate_counts` to compute log Q. Pass "
                "candidate_counts, or set logq_correction=False. Received: candidate_counts=None"
            )
        log_p = tf.gather(self._log_p_data, ids)
        batch_size = tf.cast(tf.shape(labels)[0], tf.float64)
        return tf.cast(log_p + tf.math.log(batch_size), tf.float32)

    def get_config(self):
        counts = self.candidate_counts
        return {
            "num_candidates": self.num_candidates,
            "candidate_counts": None if counts is None else counts.tolist(),
        }


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class MixedSampler(CandidateSampler):
    """`num_sampled` negatives from a base sampler plus the batch's labels (`M = S + B`).

    Every candidate's expected count is that of the mixture, `Q_j = S p_s(j) + B p_data(j)`,
    computed as a `logaddexp` in float64 (Yi et al. 2019, "mixed negative sampling"). A class of
    count 0 gets one observation in both terms that use counts (`p_data(j) = 1 / sum_k c_k`,
    and the same floor in a unigram base), as in `UnigramSampler` and `InBatchSampler`.

    Args:
        num_candidates: int. Size `N` of the catalogue.
        base: `CandidateSampler` drawing the `S` sampled negatives.
        candidate_counts: Optional sequence of `N` counts defining `p_data`. Without it,
            `log_q` is NaN and `log_expected_count` raises, as for `InBatchSampler`.
    """

    def __init__(self, num_candidates, base, candidate_counts=None):
        super().__init__(num_candidates)
        if isinstance(base, dict):
            base = tf.keras.utils.deserialize_keras_object(base)
        if not isinstance(base, CandidateSampler) or isinstance(base, InBatchSampler):
            raise TypeError(
                "`base` must be a CandidateSampler drawing from the catalogue (not in-batch). "
                f"Received: base={base!r}"
            )
        self.base = base
        self.in_batch = InBatchSampler(num_candidates, candidate_counts)

    def sample(self, num_sampled, labels, seed=None):
        sampled, _ = self.base.sample(num_sampled, labels, seed=seed)
        ids = tf.concat([sampled, tf.cast(tf.reshape(labels, [-1]), tf.int64)], axis=0)
        if self.in_batch.candidate_counts is None:
            return ids, _unknown_log_q(ids)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        log_sampled = tf.cast(self.base.log_expected_count(ids, num_sampled, labels), tf.float64)
        log_batch = tf.cast(self.in_batch.log_expected_count(ids, num_sampled, labels), tf.float64)
        high = tf.maximum(log_sampled, log_batch)
        low = tf.minimum(log_sampled, log_batch)
        return tf.cast(high + tf.math.log1p(tf.exp(low - high)), tf.float32)

    def get_config(self):
        counts = self.in_batch.candidate_counts
        return {
            "num_candidates": self.num_candidates,
            "base": tf.keras.utils.serialize_keras_object(self.base),
            "candidate_counts": None if counts is None else counts.tolist(),
        }


_BASES = ("uniform", "log_uniform", "unigram")


def get_sampler(
    name: Union[str, CandidateSampler],
    num_candidates: int,
    candidate_counts: Optional[Sequence[float]] = None,
    unigram_distortion: float = 1.0,
    mixed_base: Optional[str] = None,
) -> CandidateSampler:
    """Returns a built-in sampler by name, or `name` itself if it is a `CandidateSampler`.

    Args:
        name: str or `CandidateSampler`. One of "uniform", "log_uniform", "unigram",
            "in_batch", "mixed".
        num_candidates: int. Size `N` of the catalogue.
        candidate_counts: Optional sequence of `N` non-negative counts. Required by "unigram".
        unigram_distortion: float > 0. Power applied to the counts by "unigram". Defaults to 1.
        mixed_base: Optional str. Base sampler of "mixed": "uniform", "log_uniform" or
            "unigram". Defaults to "unigram" with counts, "log_uniform" without.

    Raises:
        ValueError: unknown name or mixed_base, "unigram" without counts, bad counts or
            distortion, or an instance whose `num_candidates` differs.

    >>> get_sampler("log_uniform", 100).num_candidates
    100
    """
    num_candidates = check_int("num_candidates", num_candidates, 1)
    if isinstance(name, CandidateSampler):
        if name.num_candidates != num_candidates:
            raise ValueError(
                f"The sampler covers {name.num_candidates} candidates but the catalogue has "
                f"num_candidates={num_candidates}. Received: sampler={name!r}"
            )
        return name
    if name not in SAMPLERS:
        raise ValueError(
            f"Unknown `sampler`. Expected one of {list(SAMPLERS)} or a CandidateSampler. "
            f"Received: sampler={name!r}"
        )
    if mixed_base is not None and name != "mixed":
        raise ValueError(
            f"`mixed_base` only applies to sampler='mixed'. Received: mixed_base={mixed_base!r} "
            f"with sampler={name!r}"
        )
    if name == "uniform":
        return UniformSampler(num_candidates)
    if name == "log_uniform":
        return LogUniformSampler(num_candidates)
    if name == "unigram":
        if candidate_counts is None:
            raise ValueError(
                "sampler='unigram' draws from `candidate_counts`; pass them. "
                "Received: candidate_counts=None"
            )
        return UnigramSampler(num_candidates, candidate_counts, unigram_distortion)
    if name == "in_batch":
        return InBatchSampler(num_candidates, candidate_counts)
    if mixed_base is None:
        mixed_base = "unigram" if candidate_counts is not None else "log_uniform"
    if mixed_base not in _BASES:
        raise ValueError(
            f"Unknown `mixed_base`. Expected one of {list(_BASES)}. "
            f"Received: mixed_base={mixed_base!r}"
        )
    base = get_sampler(mixed_base, num_candidates, candidate_counts, unigram_distortion)
    return MixedSampler(num_candidates, base, candidate_counts)
