"""Training tasks: the sampled-softmax retrieval loss and its negative samplers."""

from tfrs_youtube.tasks.sampled_softmax import SampledSoftmaxRetrieval
from tfrs_youtube.tasks.samplers import (
    SAMPLERS,
    CandidateSampler,
    InBatchSampler,
    LogUniformSampler,
    MixedSampler,
    UniformSampler,
    UnigramSampler,
    get_sampler,
)

__all__ = [
    "SampledSoftmaxRetrieval",
    "CandidateSampler",
    "UniformSampler",
    "LogUniformSampler",
    "UnigramSampler",
    "InBatchSampler",
    "MixedSampler",
    "SAMPLERS",
    "get_sampler",
]
