"""`YouTubeCandidateModel`: the paper's candidate generation network as a `tfrs.Model`."""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.config import FEATURE_SETS, YouTubeCandidateConfig
from tfrs_youtube.data.examples import EXAMPLE_AGE, LABEL, SEARCH_TOKENS, WATCH_HISTORY
from tfrs_youtube.data.schema import USER_ID
from tfrs_youtube.layers import (
    CandidateEmbeddings,
    CategoricalEmbedding,
    ExampleAge,
    HistoryEmbeddingPooler,
    NormalizedNumeric,
    RecencyPooler,
    UserTower,
)
from tfrs_youtube.tasks import SampledSoftmaxRetrieval

__all__ = [
    "YouTubeCandidateModel",
    "YouTubeCandidateConfig",
    "FEATURE_SETS",
    "input_embedding_initializer",
]

SAMPLE_WEIGHT = "sample_weight"


def input_embedding_initializer(dim: int) -> tf.keras.initializers.Initializer:
    """Initializer of the input embedding tables: truncated normal, stddev 1/sqrt(dim).

    TensorFlow's own default for embeddings fed to a DNN (`tf.feature_column.embedding_column`).
    Keras' "uniform" (+-0.05) averaged over a bag of up to 50 IDs gives the tower inputs about
    a hundredth of the scale of the [0, 1] continuous features, and deep towers then spend their
    first epochs blind to the watch history.

    >>> init = input_embedding_initializer(64)
    >>> round(init.stddev, 3)
    0.125
    """
    return tf.keras.initializers.TruncatedNormal(stddev=1.0 / float(dim) ** 0.5)


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class YouTubeCandidateModel(tfrs.Model):
    """Deep candidate generation (Covington et al. 2016, section 3 and Figure 3).

    Each input feature goes through its own layer (the watch history and the search tokens
    through `HistoryEmbeddingPooler`, example age through `ExampleAge`, categorical and
    continuous user features through `CategoricalEmbedding` and `NormalizedNumeric`); the results
    are concatenated and run through the ReLU `UserTower`, whose output is the user vector u.
    The softmax weights v_j and biases b_j live in `CandidateEmbeddings`, and
    `SampledSoftmaxRetrieval` trains "which video is watched next" as a sampled softmax over the
    whole catalogue.

    Subclass it to change the features: override `build_feature_layers` and return a dict that
    maps an input key to the layer that encodes it (call `super()` to keep the paper's), and
    every other part stays. `build_user_tower`, `build_candidates` and `build_task` are hooks too.

    Inputs (a dict of tensors, as a `tf.data` batch): `watch_history` [batch, n] video IDs
    ("" or -1 pads, oldest first), `search_tokens` [batch, m], `example_age` [batch] (0 when
    absent, as at serving), one key per user feature, and for training `label` [batch] (the
    watched video) and optionally `sample_weight` [batch].

    Saving. The model is config-serializable (`get_config` returns the `YouTubeCandidateConfig`
    as a dict) and works with every Keras way of saving, after `fit` alone as after a call:
    `save_weights` and `tf.train.Checkpoint`; `model.save("model.keras")` and
    `model.save(directory)` (a SavedModel), also through
    `tf.keras.callbacks.ModelCheckpoint(save_weights_only=False)`; and `tf.saved_model.save`.
    `tf.keras.models.load_model` rebuilds the model from the file alone once `tfrs_youtube` is
    importable (no `custom_objects`): every weight (input tables and their vocabularies, the
    tower, v_j and b_j) and, for a compiled model, the optimizer state. The first inputs the
    model sees (in `fit`, `evaluate` or a call) become its input signature: the keys the
    feature layers read (not `label` or `sample_weight`), every dimension unknown, so the
    SavedModel's `serving_default` maps a dict of user features to the user embedding
    `[batch, output_dim]`. A model that never saw inputs has no signature to save:
    `tf.saved_model.save` warns. For TF Serving, with top-N video IDs and scores, use
    `tfrs_youtube.export.export_saved_model`.

    Args:
        config: `YouTubeCandidateConfig` (or its dict).
        **kwargs: passed to `tf.keras.Model`.

    >>> import tensorflow as tf
    >>> config = YouTubeCandidateConfig(video_vocabulary=["a", "b", "c", "d"], embedding_dim=8,
    ...     output_dim=8, depth=1, features=["watches"], num_sampled=2, metrics_k=[2])
    >>> model = YouTubeCandidateModel(config)
    >>> batch = {"watch_history": tf.constant([["a", "b"], ["c", ""]]),
    ...          "label": tf.constant(["c", "d"])}
    >>> model.user_embedding(batch).shape
    TensorShape([2, 8])
    >>> float(model.compute_loss(batch)) > 0
    True
    """

    def __init__(self, config: YouTubeCandidateConfig | Mapping[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(config, Mapping):
            config = YouTubeCandidateConfig.from_dict(dict(config))
        if not isinstance(config, YouTubeCandidateConfig):
            raise TypeError(
                "`config` must be a YouTubeCandidateConfig or a dict. "
                f"Received: config={config!r}"
            )
        self.config = config
        self.history_pooler = self.build_history_pooler()
        self.feature_layers = dict(self.build_feature_layers())
        self.user_tower = self.build_user_tower()
        self.candidates = self.build_candidates()
        # v_j and b_j exist from the start: `call` never touches them, so a model revived
        # from a SavedModel (or a checkpoint) finds them to restore into.
        with tf.name_scope(self.candidates.name):
            self.candidates.build(None)
        self.task = self.build_task()

    # Hooks a subclass may override.

    def build_history_pooler(self) -> HistoryEmbeddingPooler:
        """The watch-history pooler; its vocabulary also maps the labels.

        `history_pooling="mean"` is the paper's average (`HistoryEmbeddingPooler`), "recency"
        adds a position-weighted average of the last `recency_window` watches (`RecencyPooler`),
        "attention" weights them by position and by likeness to the latest watch.
        """
        c = self.config
        recency = {}
        if c.history_pooling in ("recency", "attention"):
            recency = {"recency_window": c.recency_window,
                       "attention": c.history_pooling == "attention"}
        return (RecencyPooler if recency else HistoryEmbeddingPooler)(
            **recency,
            output_dim=c.embedding_dim,
            vocabulary=c.video_vocabulary,  # string IDs, or else integer IDs < num_videos
            input_dim=c.num_videos if c.video_vocabulary is None else None,
            combiner=c.combiner,
            max_length=c.max_history,
            embeddings_initializer=input_embedding_initializer(c.embedding_dim),
            embeddings_regularizer=self._embedding_regularizer(),
            name="watch_history_pooler",
        )

    def build_feature_layers(self) -> dict[str, tf.keras.layers.Layer]:
        """Maps each input key to the layer that encodes it for the user tower."""
        c = self.config
        layers: dict[str, tf.keras.layers.Layer] = {WATCH_HISTORY: self.history_pooler}
        if c.uses_search:
            layers[SEARCH_TOKENS] = HistoryEmbeddingPooler(
                output_dim=c.search_embedding_dim,
                vocabulary=c.search_vocabulary,
                combiner=c.combiner,
                embeddings_initializer=input_embedding_initializer(c.search_embedding_dim),
                embeddings_regularizer=self._embedding_regularizer(),
                name="search_tokens_pooler",
            )
        if c.uses_example_age:
            layers[EXAMPLE_AGE] = ExampleAge(
                num_buckets=c.example_age_buckets, name="example_age"
            )
        if c.uses_demographics:
            for name, vocabulary in sorted(c.categorical_features.items()):
                layers[name] = CategoricalEmbedding(
                    output_dim=c.categorical_embedding_dim,
                    vocabulary=vocabulary,
                    embeddings_initializer=input_embedding_initializer(
                        c.categorical_embedding_dim
                    ),
                    embeddings_regularizer=self._embedding_regularizer(),
                    name=f"{name}_embedding",
                )
            for name, quantiles in sorted(c.numeric_features.items()):
                layers[name] = NormalizedNumeric(quantiles, name=f"{name}_normalized")
        if c.user_id_embedding_dim:
            layers[USER_ID] = CategoricalEmbedding(
                output_dim=c.user_id_embedding_dim,
                vocabulary=c.user_vocabulary,
                embeddings_initializer=input_embedding_initializer(c.user_id_embedding_dim),
                embeddings_regularizer=self._embedding_regularizer(),
                name="user_id_embedding",
            )
        return layers

    def _embedding_regularizer(self) -> tf.keras.regularizers.Regularizer | None:
        l2 = self.config.embedding_l2
        return tf.keras.regularizers.L2(l2) if l2 else None

    def build_user_tower(self) -> UserTower:
        c = self.config
        options = dict(
            dropout=c.dropout,
            input_dropout=c.input_dropout,
            l2_normalize=c.l2_normalize,
            name="user_tower",
        )
        if c.hidden_units:
            return UserTower(hidden_units=c.hidden_units, **options)
        return UserTower(depth=c.depth, output_dim=c.output_dim, **options)

    def build_candidates(self) -> CandidateEmbeddings:
        c = self.config
        dim = c.user_dim
        options = dict(
            normalize=c.l2_normalize, temperature=c.temperature, name="candidate_embeddings"
        )
        if c.ties_embeddings:
            return CandidateEmbeddings(
                c.num_videos,
                dim,
                tied_embedding=self.history_pooler.embedding,
                tied_offset=self.history_pooler.num_oov_indices if c.video_vocabulary else 0,
                **options,
            )
        return CandidateEmbeddings(c.num_videos, dim, **options)

    def build_task(self) -> SampledSoftmaxRetrieval:
        c = self.config
        return SampledSoftmaxRetrieval(
            num_candidates=c.num_videos,
            num_sampled=c.num_sampled,
            sampler=c.sampler,
            candidate_counts=c.video_counts,
            unigram_distortion=c.unigram_distortion,
            logq_correction=c.logq_correction,
            remove_accidental_hits=c.remove_accidental_hits,
            # Cutoffs beyond a small catalogue are meaningless (recall 1): leave them out.
            metrics_k=tuple(k for k in c.metrics_k if k <= c.num_videos),
            seed=c.seed,
            cross_replica_negatives=c.cross_replica_negatives,
            name="sampled_softmax",
        )

    # The network.

    def encode_features(
        self, features: Mapping[str, tf.Tensor], training: bool = False
    ) -> dict[str, tf.Tensor]:
        """Runs every feature layer; a missing `example_age` is 0, as at serving."""
        encoded = {}
        for name, layer in self.feature_layers.items():
            if name in features:
                value = features[name]
            elif name == EXAMPLE_AGE:
                batch = tf.shape(features[WATCH_HISTORY])[0]
                value = tf.zeros([batch], tf.float32)
            else:
                raise ValueError(
                    f"Feature {name!r} is missing from the inputs; the model expects "
                    f"{sorted(self.feature_layers)}. Received keys: {sorted(features)}"
                )
            encoded[name] = layer(value, training=training)
        return encoded

    def user_embedding(
        self, features: Mapping[str, tf.Tensor], training: bool = False
    ) -> tf.Tensor:
        """The user vector u [batch, output_dim]: the output of the tower's last layer."""
        return self.user_tower(self.encode_features(features, training), training=training)

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.user_embedding(features, training=training)

    def label_indices(self, labels: tf.Tensor) -> tf.Tensor:
        """Maps label video IDs to catalogue rows [0, num_videos); unknown IDs are an error."""
        indices = tf.cast(self.history_pooler.ids_to_indices(labels), tf.int64)
        if self.config.video_vocabulary is not None:
            indices = indices - self.history_pooler.num_oov_indices
        bad = tf.logical_or(indices < 0, indices >= self.config.num_videos)
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [
                "`label` holds video IDs outside the model's video vocabulary "
                f"({self.config.num_videos} videos); first offending IDs:",
                tf.boolean_mask(labels, bad)[:5],
            ],
            name="label_in_vocabulary",
        )
        return indices

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if LABEL not in features:
            raise ValueError(
                f"Training needs the watched video under the key {LABEL!r}. "
                f"Received keys: {sorted(features)}"
            )
        user = self.user_embedding(features, training=training)
        self._record_inputs(features)  # after the layers built, so their weights exist
        optimizer = getattr(self, "optimizer", None)
        return self.task(
            user,
            self.label_indices(features[LABEL]),
            self.candidates,
            sample_weight=features.get(SAMPLE_WEIGHT),
            compute_metrics=not training,
            # The step seeds the negatives: per replica and step, and restored with the
            # optimizer from a checkpoint, so a resumed run draws what an uninterrupted one did.
            step=optimizer.iterations if training and optimizer is not None else None,
            training=training,
        )

    def train_step(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # TFRS's train step, with the regularization loss divided by the replicas in sync:
        # the optimizer sums the replicas' gradients, and the task's loss is already a mean
        # over the global batch (DESIGN.md section 7).
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.nn.scale_regularization_loss(
                tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])
            )
            total_loss = loss + regularization_loss
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        # Top-K accuracy needs full-catalogue logits, so the task computes it only when evaluating;
        # its never-updated value is left out of the training logs. TFRS's total_loss is loss
        # plus regularization_loss, and the latter is 0 without regularizers: each is shown
        # only when it says something of its own.
        hidden = {"total_loss"} | (set() if self.losses else {"regularization_loss"})
        return {
            name: value
            for name, value in logs.items()
            if not (name.startswith("top_") and name.endswith("_accuracy")) and name not in hidden
        }

    def scores(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Softmax logits u·v_j + b_j over the whole catalogue, [batch, num_videos]."""
        return self.candidates.logits(self.user_embedding(features))

    def placeholder_features(self, batch_size: int = 1) -> dict[str, tf.Tensor]:
        """A batch of empty inputs (padding, zeros, unknown categories) that builds the model.

        Integer IDs are int64, as `tf.data` parses them.
        """
        features: dict[str, tf.Tensor] = {}
        for name, layer in self.feature_layers.items():
            if isinstance(layer, HistoryEmbeddingPooler):
                pad = layer.pad_value if layer.lookup is not None else tf.constant(
                    layer.pad_value, tf.int64)
                features[name] = tf.fill([batch_size, 1], pad)
            elif isinstance(layer, CategoricalEmbedding):
                empty = "" if layer.vocabulary is not None else tf.constant(0, tf.int64)
                features[name] = tf.fill([batch_size], empty)
            else:
                features[name] = tf.zeros([batch_size], tf.float32)
        return features

    # Keras saving. TFRS's train and test steps call `compute_loss`, never `self(...)`, so
    # Keras would never record the inputs of a model that only ran `fit`: no SavedModel
    # signature, `model.built` False, and a `.keras` file that reloads with no weights.

    def _feature_specs(self, inputs: Mapping[str, Any]) -> dict[str, tf.TypeSpec]:
        """The specs of the features the layers read, every dimension unknown."""
        specs: dict[str, tf.TypeSpec] = {}
        for name in self.feature_layers:
            if name not in inputs:
                continue
            value = inputs[name]
            if isinstance(value, (tf.RaggedTensor, tf.RaggedTensorSpec)):
                specs[name] = tf.RaggedTensorSpec([None, None], value.dtype, ragged_rank=1)
                continue
            if not isinstance(value, tf.TypeSpec):
                value = tf.convert_to_tensor(value)
            shape = None if value.shape.rank is None else [None] * value.shape.rank
            specs[name] = tf.TensorSpec(shape, value.dtype, name=name)
        return specs

    def _default_feature_specs(self) -> dict[str, tf.TypeSpec]:
        """The input signature of a model built without being called: its placeholders'."""
        return self._feature_specs(self.placeholder_features())

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _set_save_spec(self, inputs: Any, args: Any = None, kwargs: Any = None) -> None:
        # Keras records the first call's inputs as the SavedModel signature; keep only the
        # features (no `label`), each of any batch size and bag length.
        if isinstance(inputs, Mapping):
            inputs = self._feature_specs(inputs)
        super()._set_save_spec(inputs, args, kwargs)

    def _record_inputs(self, features: Mapping[str, tf.Tensor]) -> None:
        """Marks the model built by a training or evaluation step, as a call would."""
        if self._saved_model_inputs_spec is None:
            self._set_save_spec(features)
        self.built = True

    def get_build_config(self) -> dict[str, Any] | None:
        """The input signature, from which `build_from_config` recreates every weight.

        None for a model that has no weights yet (nothing to restore into).
        """
        specs = self._saved_model_inputs_spec
        if specs is None:
            if not self.user_tower.weights:
                return None
            specs = self._default_feature_specs()
        return {
            "input_spec": {
                name: {
                    "shape": spec.shape.as_list(),
                    "dtype": spec.dtype.name,
                    "ragged": isinstance(spec, tf.RaggedTensorSpec),
                }
                for name, spec in specs.items()
            }
        }

    def build_from_config(self, config: dict[str, Any]) -> None:
        """Creates every weight and the input signature of `get_build_config`'s result."""
        specs: dict[str, tf.TypeSpec] = {}
        for name, spec in config["input_spec"].items():
            dtype = tf.as_dtype(spec["dtype"])
            specs[name] = (
                tf.RaggedTensorSpec(spec["shape"], dtype, ragged_rank=1) if spec["ragged"]
                else tf.TensorSpec(spec["shape"], dtype, name=name)
            )
        self._set_save_spec(specs)
        with tf.init_scope():
            self.user_embedding(self.placeholder_features())
        self.built = True

    def _trackable_children(self, save_type: str = "checkpoint", **kwargs: Any) -> Any:
        if save_type == "savedmodel" and self._saved_model_inputs_spec is None:
            if self.user_tower.weights:  # built by `user_embedding` or `scores` alone
                self._set_save_spec(self._default_feature_specs())
                self.built = True
            else:
                warnings.warn(
                    f"{type(self).__name__} {self.name!r} has no input signature: it was never "
                    "called, fit or evaluated, so the SavedModel gets no `serving_default` "
                    "signature and no weights of the feature layers or the tower. Call it "
                    "first, e.g. `model(model.placeholder_features())`, or train it.",
                    UserWarning,
                    stacklevel=2,
                )
        return super()._trackable_children(save_type, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "YouTubeCandidateModel":
        return cls(YouTubeCandidateConfig.from_dict(config["config"]))
