"""mIoU of a model in ONNX Runtime (fp32 and dynamic int8) beside PyTorch, dense and MPM, on one split.

The accuracy side of ``benchmarks/edge.py``: the same exports (the dense graph; MPM as segments
between its merge sites, the merge steps in NumPy between the sessions), the int8 variant made by
ONNX Runtime's dynamic quantisation of their MatMul/Gemm weights (beyond the paper), evaluated by
one sliding-window loop for every variant: keep-ratio resize to the split's test scale, the
model's own normalisation, windows of the model's crop at the dataset's stride (mmseg's order),
logits averaged over overlaps, bilinear back to the image, argmax, one confusion matrix. The
PyTorch rows of this loop reproduce ``mpm eval``'s mIoU of the same model (checked: ``torch_vs_eval``
when ``--eval-json`` names the pipeline's records).

    python benchmarks/edge_miou.py --checkpoint results/models/seg-t-demo.pth \\
        --data data --dataset synthetic --split val --out results/reference/cpu \\
        --eval-json results/eval/synthetic/seg-t-demo

Writes ``DIR/edge_miou.json`` (atomically) and prints a table. Windows run one at a time (batch 1,
as on a Pi). Needs torch, onnx, onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCHEMA = "mpm.edge-miou/1"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="an mpm checkpoint (e.g. the demo's results/models/seg-t-demo.pth)")
    ap.add_argument("--data", required=True, help="the data root holding the prepared dataset")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split", default="val")
    ap.add_argument("--schedule", default="2,5", help="MPM schedule (default 2,5)")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (default 2)")
    ap.add_argument("--eval-json", default=None, help="folder of the pipeline's eval records of this model "
                                                       "(none/dense.json, mpm/<name>.json) to compare with")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for edge_miou.json (created)")
    return ap.parse_args(argv)


def sliding_miou(forward, split, proto, num_classes: int, ignore_index: int, limit: int | None) -> dict:
    """mIoU of ``forward`` ((1, 3, h, w) normalised float32 tensor -> (1, K, h, w) logits) on ``split``."""
    import torch

    from mpm.evaluation.metrics import ConfusionMatrix
    from mpm.evaluation.sliding import resize_keep_ratio, resize_logits, slide_inference

    conf = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    mean = torch.tensor(proto.mean).view(1, 3, 1, 1)
    std = torch.tensor(proto.std).view(1, 3, 1, 1)
    count = 0
    for i, sample in enumerate(split):
        if limit is not None and i >= limit:
            break
        resized = resize_keep_ratio(sample.image, proto.test_scale)
        x = (torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float() - mean) / std
        logits = slide_inference(forward, x, num_classes, crop=proto.crop, stride=proto.stride, batch_size=1)
        pred = resize_logits(logits, sample.label.shape)[0].argmax(0).numpy()
        conf.update(pred, sample.label)
        count += 1
    return {"mIoU": round(float(conf.compute().mIoU), 4), "images": count}


def export(model, schedule: tuple[int, ...], crop: tuple[int, int], work: Path) -> tuple[Path, Path]:
    """fp32 exports (dense graph + MPM segments) and their dynamic int8 copies."""
    import torch

    from edge import quantize_folder
    from mpm.benchmarking.onnx_export import export_dense, export_segments
    from mpm.merging import build_method

    example = torch.zeros(1, 3, *crop)
    fp32, int8 = work / "fp32", work / "int8"
    export_segments(model, build_method("mpm", schedule), example, fp32)
    export_dense(model, example, fp32 / "dense.onnx")
    quantize_folder(fp32, int8)
    return fp32, int8


def variants(model, schedule, folders: dict[str, Path], threads: int):
    """(runtime, method, forward) for PyTorch and each ONNX Runtime export, dense and MPM."""
    import onnxruntime as ort
    import torch

    from mpm.benchmarking.onnx_runtime import SegmentedModel, session_options
    from mpm.merging import build_method

    dense, mpm = build_method("none"), build_method("mpm", schedule)

    def torch_forward(method):
        def forward(x):
            with torch.inference_mode():
                return model(x, method=method, backend="math")
        return forward

    yield "torch", "none", torch_forward(dense)
    yield "torch", "mpm", torch_forward(mpm)
    for runtime, folder in folders.items():
        session = ort.InferenceSession(str(folder / "dense.onnx"), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        yield runtime, "none", lambda x, s=session: torch.from_numpy(s.run(None, {"images": x.numpy()})[0])
        segmented = SegmentedModel.load(folder, threads=threads)
        yield runtime, "mpm", lambda x, m=segmented: torch.from_numpy(m(x.numpy()).logits)


def pipeline_miou(folder: str | None, schedule: tuple[int, ...]) -> dict[str, float]:
    """The pipeline's mIoU of dense and of MPM with this schedule, from its eval records (if given)."""
    if not folder:
        return {}
    from mpm.records import EvalRecord

    out = {}
    for path in Path(folder).rglob("*.json"):
        record = EvalRecord.read(path)  # a record that does not match its schema stops here, naming the file
        method = record["method"]
        if record["limit"] is None and method["method"] in ("none", "mpm"):
            if method["method"] == "none" or tuple(method["schedule"]) == schedule:
                out[method["method"]] = float(record["metrics"]["mIoU"])
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from mpm.data.datasets import load_split
    from mpm.evaluation.evaluate import eval_protocol
    from mpm.io import write_text_atomic
    from mpm.models.checkpoints import load_segmenter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    schedule = tuple(int(b) for b in args.schedule.split(","))
    model = load_segmenter(args.checkpoint).float().eval()
    split = load_split(args.data, args.dataset, args.split)
    proto = eval_protocol(split.spec, model.config)
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = dict(zip(("onnxruntime", "onnxruntime-int8"), export(model, schedule, proto.crop, Path(tmp))))
        for runtime, method, forward in variants(model, schedule, folders, args.threads):
            t0 = time.perf_counter()
            result = sliding_miou(forward, split, proto, split.spec.num_classes, split.spec.ignore_index, args.limit)
            rows.append({"runtime": runtime, "method": "MPM(" + ",".join(map(str, schedule)) + ")" if method == "mpm"
                         else "dense", **result, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"[edge_miou] {runtime:17s} {rows[-1]['method']:9s} mIoU {result['mIoU']:.2f} "
                  f"({result['images']} images, {rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    torch_miou = {r["method"]: r["mIoU"] for r in rows if r["runtime"] == "torch"}
    for r in rows:
        r["dmIoU_vs_torch"] = round(r["mIoU"] - torch_miou[r["method"]], 4)
    from mpm.environment import cpu_model

    pipeline = pipeline_miou(args.eval_json, schedule)
    result = {
        "schema": SCHEMA,
        "description": "mIoU of one model in PyTorch, ONNX Runtime fp32 and ONNX Runtime dynamic int8 (MatMul/Gemm "
                       "weights; beyond the paper), dense and MPM, one sliding-window loop for all "
                       "(benchmarks/edge_miou.py)",
        "checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
        "synthetic": bool(split.spec.name == "synthetic"),
        "protocol": {"test_scale": list(proto.test_scale), "crop": list(proto.crop), "stride": list(proto.stride)},
        "cpu": cpu_model(), "torch": torch.__version__,
        "pipeline_mIoU": pipeline,
        "torch_vs_eval": {k: round(torch_miou["dense" if k == "none" else rows[1]["method"]] - v, 4)
                          for k, v in pipeline.items()},
        "rows": rows, "seconds": round(time.time() - started, 1),
    }
    path = out / "edge_miou.json"
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    print(f"\n{'runtime':18s} {'method':10s} {'mIoU':>7s} {'vs torch':>9s}")
    for r in rows:
        print(f"{r['runtime']:18s} {r['method']:10s} {r['mIoU']:7.2f} {r['dmIoU_vs_torch']:+9.2f}")
    if pipeline:
        print("pipeline's mpm eval: " + ", ".join(f"{k} {v:.2f}" for k, v in pipeline.items()))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
