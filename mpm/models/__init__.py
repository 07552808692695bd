"""Models: attention backends, the merging encoder runner, Segmenter, checkpoints, FLOPs."""

from mpm.models.attention import BACKENDS, attention, check_backend
from mpm.models.checkpoints import load_segmenter, save_segmenter
from mpm.models.encoder import EncoderOutput, run_encoder
from mpm.models.flops import FlopReport, flops_of_run, segmenter_flops
from mpm.models.segmenter import VIT_SIZES, Segmenter, SegmenterConfig, build_segmenter

__all__ = [
    "BACKENDS",
    "EncoderOutput",
    "FlopReport",
    "Segmenter",
    "SegmenterConfig",
    "VIT_SIZES",
    "attention",
    "build_segmenter",
    "check_backend",
    "flops_of_run",
    "load_segmenter",
    "save_segmenter",
    "segmenter_flops",
    "run_encoder",
]
