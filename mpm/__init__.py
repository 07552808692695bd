"""MPM: Mutual Pair Merging for efficient Vision Transformers.

Layers, each depending only on the ones listed before it:

- :mod:`mpm.merging`      token merging methods (MPM, ToMe, ALGM) and merge maps
- :mod:`mpm.models`       attention backends, Segmenter on timm, checkpoints, FLOPs
- :mod:`mpm.patch`        one-line patch for any timm VisionTransformer
- :mod:`mpm.data`         model zoo, downloads, dataset preparation, synthetic demo set
- :mod:`mpm.evaluation`   sliding-window inference, mIoU, demo-model training
- :mod:`mpm.benchmarking` latency/throughput on local, ssh and slurm targets
- :mod:`mpm.tracking`     MLflow logging
- :mod:`mpm.tables`       the paper's tables and figures
- :mod:`mpm.cli`          the ``mpm`` command
"""

__version__ = "0.1.0"
