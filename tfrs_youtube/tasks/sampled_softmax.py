"""Sampled-softmax retrieval task (Covington et al. 2016, section 3.1)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube._checks import check_int, check_number
from tfrs_youtube.tasks import samplers as samplers_lib
from tfrs_youtube.topk import chunked_top_k

__all__ = ["SampledSoftmaxRetrieval"]


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class SampledSoftmaxRetrieval(tf.keras.layers.Layer, tfrs.tasks.Task):
    """Extreme multiclass softmax over a catalogue, trained with sampled negatives.

    Implements "Efficient Extreme Multiclass" (Covington et al. 2016, section 3.1): the
    probability that the user watches video `j` is a softmax over the whole catalogue of the
    scores `s(j) = u . v_j + b_j`; training approximates it with thousands of shared sampled
    negatives, corrected by importance weighting (subtract `log Q_j`, Jean et al. 2015), with
    accidental hits removed. Calling the layer returns the loss, as `tfrs.tasks.Retrieval`
    does, and updates the `top_{k}_accuracy` metrics.

    For each row `i` the candidate set is `[label_i] + M` negatives shared by the batch. Their
    logits are `s(j) - log Q_j` when `logq_correction` (true column included, as in
    `tf.nn.sampled_softmax_loss`). A negative whose id equals `label_i` is removed: its logit
    is `-inf` and the loss is a `reduce_logsumexp`, so it contributes exactly 0 and its gradient
    is 0. The per-example loss is `l_i = logsumexp(row_i) - true_logit_i` and the reduction is
    `loss = sum_i w_i * l_i / B` (`w_i = 1` without `sample_weight`): a mean over the batch in
    which weights rescale examples but do not renormalize.

    Distribution (DESIGN.md section 7). Under a `tf.distribute` strategy `B` is the *global*
    batch: each replica returns `sum_i w_i * l_i` of its rows over the sum of the row counts of
    all replicas in sync (one scalar all-reduce), so the gradients that Keras' optimizer sums
    over the replicas are those of one replica on the whole global batch (MirroredStrategy,
    MultiWorkerMirroredStrategy; under ParameterServerStrategy each worker step is its own
    batch). The negatives are drawn with a stateless seed made from `seed`, the training step
    (`step`, which `YouTubeCandidateModel` sets to its optimizer's `iterations`) and the
    replica id, so every replica and every step draws its own negatives, and a run resumed
    from a checkpoint draws the same ones as an uninterrupted run (`sampler_seed`). With
    `cross_replica_negatives`, the in-batch part of "in_batch" and "mixed" is the labels of
    every replica (`all_gather`), not only the replica's own.

    With `num_sampled=None` the loss is the full softmax over all `N` classes from
    `candidates.logits`, with no correction. The task is config-serializable (`get_config`;
    `candidate_counts` is stored as a list).

    Args:
        num_candidates: int. Catalogue size `N`; labels are ids in `[0, N)`.
        num_sampled: Optional int in `[1, N)`. Negatives drawn per step (ignored by
            "in_batch"). `None` trains with the full softmax. Defaults to 4096.
        sampler: str or `CandidateSampler`. "uniform", "log_uniform" (Zipfian over a
            frequency-sorted vocabulary), "unigram", "in_batch" or "mixed". Defaults to
            "log_uniform".
        candidate_counts: Optional sequence of `N` non-negative counts (needed by "unigram",
            and by "in_batch"/"mixed" when `logq_correction`). Defaults to None.
        unigram_distortion: float > 0. Power applied to counts by "unigram". Defaults to 1.0.
        logq_correction: bool. Subtract `log Q` from the logits. Defaults to True.
        remove_accidental_hits: bool. Remove negatives equal to the row's label. Defaults to
            True.
        metrics_k: sequence of ints in `[1, N]`. One `top_{k}_accuracy` metric per entry: the
            share of rows whose label is among the k highest logits of the full catalogue
            (nothing excluded, ties by index order), as TFRS's `FactorizedTopK`. It is not
            `tfrs_youtube.evaluation`'s Recall@K, which leaves out the user's earlier watches
            and breaks ties pessimistically. Defaults to `()`.
        mixed_base: Optional str. Base sampler of "mixed". Defaults to None ("unigram" with
            counts, else "log_uniform").
        seed: Optional int. Seed of the negatives: with the step and the replica id it makes
            the stateless seed of each draw (`sampler_seed`). Defaults to None (0).
        cross_replica_negatives: bool. Under a strategy with several replicas in sync, use the
            labels of all replicas as the in-batch negatives of "in_batch" and "mixed".
            Ignored by the other samplers. Defaults to False.
        name: Optional str. Layer name.

    Call arguments:
        query_embeddings: float tensor of shape `(B, d)`: the user vectors `u`.
        labels: int32 or int64 tensor of shape `(B,)`: the watched ids.
        candidates: object with `lookup(ids) -> (weights (..., d), biases (...))` and
            `logits(query_embeddings) -> (B, N)`, e.g. the output-embedding layer of
            `tfrs_youtube.layers.candidates`.
        sample_weight: Optional float tensor of shape `(B,)`.
        compute_metrics: bool. Update the recall metrics (scores the whole catalogue, chunk by
            chunk with `tfrs_youtube.topk.chunked_top_k`: never a `(B, N)` tensor).
        step: Optional int scalar (tensor or variable): the training step the negatives are
            drawn for. Defaults to None: the task's own counter (a variable it creates on
            its first such call, outside a distribution strategy only), advanced on every
            call that is not `training=False`.
        training: Optional bool. `False` leaves the task's own step counter unchanged.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: invalid construction argument; `query_embeddings` and candidate
            dimensions differ (when static shapes are known).
        TypeError: non-integer `labels`.
        tf.errors.InvalidArgumentError: `labels` outside `[0, num_candidates)`.

    >>> class Candidates(tf.Module):
    ...     def __init__(self, n, d):
    ...         self.table = tf.Variable(tf.random.stateless_normal([n, d], seed=[1, 2]))
    ...         self.bias = tf.Variable(tf.zeros([n]))
    ...     def lookup(self, ids):
    ...         return tf.gather(self.table, ids), tf.gather(self.bias, ids)
    ...     def logits(self, query_embeddings):
    ...         return tf.matmul(query_embeddings, self.table, transpose_b=True) + self.bias
    >>> task = SampledSoftmaxRetrieval(num_candidates=100, num_sampled=20, metrics_k=(10,))
    >>> queries = tf.random.stateless_normal([4, 8], seed=[3, 4])
    >>> loss = task(queries, tf.constant([1, 5, 7, 9]), Candidates(100, 8))
    >>> loss.shape, [metric.name for metric in task.metrics]
    (TensorShape([]), ['top_10_accuracy'])
    """

    def __init__(
        self,
        num_candidates: int,
        num_sampled: Optional[int] = 4096,
        sampler: Union[str, samplers_lib.CandidateSampler, dict] = "log_uniform",
        candidate_counts: Optional[Sequence[float]] = None,
        unigram_distortion: float = 1.0,
        logq_correction: bool = True,
        remove_accidental_hits: bool = True,
        metrics_k: Sequence[int] = (),
        mixed_base: Optional[str] = None,
        seed: Optional[int] = None,
        cross_replica_negatives: bool = False,
        name: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(sampler, dict):
            sampler = tf.keras.utils.deserialize_keras_object(sampler)
        check_int("num_candidates", num_candidates, 1)
        if num_sampled is not None:
            check_int("num_sampled", num_sampled, 1, allow_none=True)
            in_batch = sampler == "in_batch" or isinstance(sampler, samplers_lib.InBatchSampler)
            if num_sampled >= num_candidates and not in_batch:
                raise ValueError(
                    f"`num_sampled` must be smaller than num_candidates={num_candidates}; to "
                    "train on every class use num_sampled=None (full softmax). "
                    f"Received: num_sampled={num_sampled}"
                )
        if candidate_counts is not None:
            candidate_counts = samplers_lib._check_counts(candidate_counts, num_candidates)
        check_number("unigram_distortion", unigram_distortion, 0.0, low_inclusive=False)
        if isinstance(metrics_k, (int, np.integer)):
            metrics_k = (metrics_k,)
        metrics_k = tuple(metrics_k)
        for k in metrics_k:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (
                1 <= k <= num_candidates
            ):
                raise ValueError(
                    f"Every entry of `metrics_k` must be an int in [1, {num_candidates}] "
                    f"(num_candidates). Received: metrics_k={metrics_k!r}"
                )
        self.num_candidates = int(num_candidates)
        self.num_sampled = None if num_sampled is None else int(num_sampled)
        self.candidate_counts = candidate_counts
        self.unigram_distortion = float(unigram_distortion)
        self.logq_correction = bool(logq_correction)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.metrics_k = tuple(int(k) for k in metrics_k)
        self.mixed_base = mixed_base
        check_int("seed", seed, allow_none=True)
        self.seed = seed
        self.cross_replica_negatives = bool(cross_replica_negatives)
        self._own_step = None
        self.sampler = sampler
        self._sampler = None
        if self.num_sampled is not None:
            self._sampler = samplers_lib.get_sampler(
                sampler, self.num_candidates, candidate_counts, unigram_distortion, mixed_base
            )
            batch_part = self._sampler
            if isinstance(batch_part, samplers_lib.MixedSampler):
                batch_part = batch_part.in_batch
            if (
                self.logq_correction
                and isinstance(batch_part, samplers_lib.InBatchSampler)
                and batch_part.candidate_counts is None
            ):
                raise ValueError(
                    f"sampler={sampler!r} with logq_correction=True needs the data "
                    "frequencies: pass candidate_counts, or set logq_correction=False. "
                    "Received: candidate_counts=None"
                )
        # Assigning a list of metrics to an attribute makes Keras track them, so `self.metrics`,
        # `tfrs.Model.metrics` and `reset_metrics` see them.
        self.recall_metrics = [
            tf.keras.metrics.Mean(name=f"top_{k}_accuracy") for k in self.metrics_k
        ]

    def call(
        self,
        query_embeddings: tf.Tensor,
        labels: tf.Tensor,
        candidates: Any,
        sample_weight: Optional[tf.Tensor] = None,
        compute_metrics: bool = True,
        step: Optional[Any] = None,
        training: Optional[bool] = None,
    ) -> tf.Tensor:
        query_embeddings = tf.convert_to_tensor(query_embeddings)
        labels = self._check_labels(labels)
        context = tf.distribute.get_replica_context()
        num_replicas = 1 if context is None else context.num_replicas_in_sync
        batch_size = tf.cast(tf.shape(labels)[0], tf.float32)
        if num_replicas > 1:  # the global batch: rows of every replica (uneven last batches)
            batch_size = context.all_reduce(tf.distribute.ReduceOp.SUM, batch_size)
        if sample_weight is not None:
            sample_weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])

        true_weights, true_biases = candidates.lookup(labels)
        self._check_dimensions(query_embeddings, true_weights)
        full_logits = None
        if self.num_sampled is None:
            full_logits = self._full_logits(query_embeddings, candidates)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, full_logits)
        else:
            per_example = self._sampled_loss(
                query_embeddings, labels, candidates, true_weights, true_biases,
                self._step_seed(step, training, context),
                self._negative_labels(labels, context, num_replicas),
            )
        if sample_weight is not None:
            per_example = per_example * sample_weight
        loss = tf.reduce_sum(per_example) / batch_size

        update_ops = []
        if compute_metrics and self.recall_metrics:
            k_max = max(self.metrics_k)
            if full_logits is not None:  # the full softmax has already scored the catalogue
                _, top_ids = tf.math.top_k(full_logits, k=k_max)
            else:  # chunk by chunk: no (B, N) tensor
                _, top_ids = chunked_top_k(
                    query_embeddings, candidates, k_max, num_candidates=self.num_candidates
                )
            hits = tf.cast(tf.equal(top_ids, tf.cast(labels[:, None], top_ids.dtype)), tf.float32)
            for k, metric in zip(self.metrics_k, self.recall_metrics):
                recall = tf.reduce_sum(hits[:, :k], axis=1)
                update_ops.append(metric.update_state(recall, sample_weight=sample_weight))
        with tf.control_dependencies([op for op in update_ops if op is not None]):
            return tf.identity(loss)

    def _full_logits(self, query_embeddings, candidates) -> tf.Tensor:
        logits = tf.cast(candidates.logits(query_embeddings), tf.float32)
        width = logits.shape[-1]
        if width is not None and width != self.num_candidates:
            raise ValueError(
                f"`candidates.logits` returned {width} columns but the task has "
                f"num_candidates={self.num_candidates}; they must match. "
                f"Received: logits of shape {logits.shape}"
            )
        return logits

    def sampler_seed(self, step: Any, replica_id: Any = 0) -> tf.Tensor:
        """The stateless seed (int64, shape `(2,)`) of the negatives of `step` on `replica_id`.

        `fold_in(fold_in([seed, 0], step), replica_id)`: distinct for every step and replica,
        the same for the same three numbers in any process.

        >>> task = SampledSoftmaxRetrieval(num_candidates=10, num_sampled=3, seed=7)
        >>> bool(tf.reduce_all(task.sampler_seed(5, 0) == task.sampler_seed(5, 0)))
        True
        >>> bool(tf.reduce_all(task.sampler_seed(5, 0) == task.sampler_seed(5, 1)))
        False
        """
        base = tf.constant([self.seed or 0, 0], tf.int64)
        seed = tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))
        return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica_id, tf.int64))

    def _step_seed(self, step, training, context) -> tf.Tensor:
        replica_id = 0 if context is None else context.replica_id_in_sync_group
        if step is not None:
            return self.sampler_seed(step, replica_id)
        if training is False and self._own_step is None:  # evaluation: nothing to advance
            return self.sampler_seed(0, replica_id)
        if self._own_step is None:
            self._create_own_step()
        current = self._own_step.read_value()
        if training is not False:
            with tf.control_dependencies([current]):
                self._own_step.assign_add(1)
        return self.sampler_seed(current, replica_id)

    def _create_own_step(self) -> None:
        with tf.init_scope():  # created once, eagerly, outside any traced function
            self._own_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="sample_step")

    def load_own_variables(self, store: Any) -> None:
        # The step counter exists once a call advanced it; a task rebuilt from a `.keras`
        # file that saved one creates it to restore the count into.
        own = len(self._trainable_weights) + len(self._non_trainable_weights)
        if self._own_step is None and len(store.keys()) > own:
            self._create_own_step()
        super().load_own_variables(store)

    def _negative_labels(self, labels, context, num_replicas) -> tf.Tensor:
        """The labels the in-batch negatives come from: the replica's, or every replica's."""
        if not self.cross_replica_negatives or num_replicas == 1:
            return labels
        return context.all_gather(labels, axis=0)

    def _sampled_loss(
        self, query_embeddings, labels, candidates, true_weights, true_biases, seed,
        negative_labels,
    ):
        neg_ids, neg_log_q = self._sampler.sample(self.num_sampled, negative_labels, seed=seed)
        neg_weights, neg_biases = candidates.lookup(neg_ids)
        true_logits = tf.reduce_sum(query_embeddings * true_weights, axis=-1) + true_biases
        neg_logits = tf.matmul(query_embeddings, neg_weights, transpose_b=True) + neg_biases
        true_logits = tf.cast(true_logits, tf.float32)
        neg_logits = tf.cast(neg_logits, tf.float32)
        if self.logq_correction:
            true_log_q = self._sampler.log_expected_count(
                labels, self.num_sampled, negative_labels
            )
            true_logits = true_logits - true_log_q
            neg_logits = neg_logits - neg_log_q[None, :]
        if self.remove_accidental_hits:
            hits = tf.equal(labels[:, None], tf.cast(neg_ids, tf.int64)[None, :])
            neg_logits = tf.where(hits, tf.constant(-np.inf, tf.float32), neg_logits)
        row = tf.concat([true_logits[:, None], neg_logits], axis=1)
        return tf.reduce_logsumexp(row, axis=1) - true_logits

    def _check_labels(self, labels) -> tf.Tensor:
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(
                f"`labels` must be int32 or int64 ids in [0, {self.num_candidates}). "
                f"Received: labels of dtype {labels.dtype.name}"
            )
        if labels.shape.rank == 2 and labels.shape[-1] == 1:
            labels = tf.squeeze(labels, axis=-1)
        if labels.shape.rank is not None and labels.shape.rank != 1:
            raise ValueError(
                "`labels` must have shape (batch_size,). "
                f"Received: labels of shape {labels.shape}"
            )
        labels = tf.cast(labels, tf.int64)
        message = (
            f"`labels` must be ids in [0, {self.num_candidates}) (num_candidates="
            f"{self.num_candidates})."
        )
        checks = [
            tf.debugging.assert_non_negative(labels, message=message),
            tf.debugging.assert_less(labels, tf.constant(self.num_candidates, tf.int64), message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    @staticmethod
    def _check_dimensions(query_embeddings, candidate_weights) -> None:
        query_dim = query_embeddings.shape[-1]
        candidate_dim = candidate_weights.shape[-1]
        if query_dim is not None and candidate_dim is not None and query_dim != candidate_dim:
            raise ValueError(
                f"`query_embeddings` has dimension {query_dim} but the candidate embeddings "
                f"have dimension {candidate_dim}; make the user tower output {candidate_dim} "
                f"units. Received: query_embeddings of shape {query_embeddings.shape}"
            )

    def get_config(self) -> dict:
        config = super().get_config()
        sampler = self.sampler
        if isinstance(sampler, samplers_lib.CandidateSampler):
            sampler = tf.keras.utils.serialize_keras_object(sampler)
        counts = self.candidate_counts
        config.update(
            {
                "num_candidates": self.num_candidates,
                "num_sampled": self.num_sampled,
                "sampler": sampler,
                "candidate_counts": None if counts is None else counts.tolist(),
                "unigram_distortion": self.unigram_distortion,
                "logq_correction": self.logq_correction,
                "remove_accidental_hits": self.remove_accidental_hits,
                "metrics_k": list(self.metrics_k),
                "mixed_base": self.mixed_base,
                "seed": self.seed,
                "cross_replica_negatives": self.cross_replica_negatives,
            }
        )
        return config
