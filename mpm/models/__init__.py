"""Models: attention backends, the merging encoder runner, Segmenter, checkpoints, FLOPs."""

from mpm.models.attention import BACKENDS, attention, check_backend
from mpm.models.encoder import EncoderOutput, run_encoder
from mpm.models.segmenter import VIT_SIZES, Segmenter, SegmenterConfig, build_segmenter

__all__ = [
    "BACKENDS",
    "EncoderOutput",
    "Segmenter",
    "SegmenterConfig",
    "VIT_SIZES",
    "attention",
    "build_segmenter",
    "check_backend",
    "run_encoder",
]
