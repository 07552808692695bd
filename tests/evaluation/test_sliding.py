"""Sliding-window protocol: resize sizes, tiling, overlap averaging, batching, predict."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mpm.evaluation.sliding import (
    normalize,
    predict,
    rescale_size,
    resize_keep_ratio,
    slide_inference,
    slide_windows,
)

SIZES = [1, 5, 17, 255, 256, 257, 480, 511, 512, 513, 683, 992, 1000, 1024, 2048]
CROPS = [(512, 480), (640, 608), (16, 16), (7, 3), (512, 512)]


@pytest.mark.parametrize("crop,stride", CROPS)
def test_windows_cover_every_pixel(crop, stride):
    sizes = [s for s in SIZES if s <= 40 * crop] + [crop - 1, crop, crop + 1, crop + stride,
                                                     crop + 2 * stride, crop + 2 * stride + 1]
    for h, w in itertools.product(sorted(set(s for s in sizes if s > 0)), repeat=2):
        wins = slide_windows(h, w, crop, stride)
        cover = np.zeros((h, w), dtype=np.int32)
        for y1, y2, x1, x2 in wins:
            assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
            assert (y2 - y1, x2 - x1) == (min(crop, h), min(crop, w))
            cover[y1:y2, x1:x2] += 1
        assert cover.min() >= 1, (h, w, crop, stride)
        assert len(set(wins)) == len(wins)


def test_windows_hand_examples():
    # 512 x 683 ADE20K-like image, crop 512 stride 480: two windows along x
    assert slide_windows(512, 683, 512, 480) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    # exact multiple: one window
    assert slide_windows(512, 512, 512, 480) == [(0, 512, 0, 512)]
    # image smaller than the crop: one smaller window
    assert slide_windows(300, 400, 512, 480) == [(0, 300, 0, 400)]
    # 1024 x 2048 (Cityscapes), crop 768 stride 512: grids 2 x 4
    wins = slide_windows(1024, 2048, (768, 768), (512, 512))
    assert [w[:2] for w in wins[::4]] == [(0, 768), (256, 1024)]
    assert [w[2:] for w in wins[:4]] == [(0, 768), (512, 1280), (1024, 1792), (1280, 2048)]
    with pytest.raises(ValueError):
        slide_windows(100, 100, 10, 11)


def test_windows_match_mmseg_formula_literally():
    def ref(h_img, w_img, h_crop, w_crop, h_stride, w_stride):
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        out = []
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y1, x1 = h_idx * h_stride, w_idx * w_stride
                y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
                out.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
        return out

    for h, w in itertools.product(SIZES, repeat=2):
        assert slide_windows(h, w, (512, 640), (480, 608)) == ref(h, w, 512, 640, 480, 608)


class WindowIndexModel:
    """Fake model: window number ``c`` (in call order) gets the constant logit ``c``."""

    def __init__(self, num_classes=2):
        self.k, self.calls, self.seen = num_classes, 0, 0

    def __call__(self, x):
        n, _, h, w = x.shape
        self.calls += 1
        idx = torch.arange(self.seen, self.seen + n, dtype=torch.float32)
        self.seen += n
        return idx.view(n, 1, 1, 1).expand(n, self.k, h, w) + torch.arange(self.k).view(1, -1, 1, 1)


@pytest.mark.parametrize("h,w", [(40, 50), (16, 16), (10, 30), (17, 47)])
def test_overlaps_averaged_and_batching(h, w):
    crop, stride = 16, 12
    img = torch.zeros(1, 3, h, w)
    wins = slide_windows(h, w, crop, stride)
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for i, (y1, y2, x1, x2) in enumerate(wins):
        total[y1:y2, x1:x2] += i
        count[y1:y2, x1:x2] += 1
    expected = total / count
    ref = None
    for bs in (1, 2, 3, 100):
        model = WindowIndexModel(num_classes=3)
        out = slide_inference(model, img, 3, crop=crop, stride=stride, batch_size=bs)
        assert out.shape == (1, 3, h, w)
        assert model.calls == -(-len(wins) // bs)
        np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out[0, 2].numpy(), expected + 2, rtol=0, atol=1e-5)
        ref = out if ref is None else ref
        torch.testing.assert_close(out, ref)


def _conv_model(k=5, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, k, 3, padding=1)  # not pixelwise: windows see borders
    return conv.eval()


def test_batching_with_a_real_model_and_multi_image_batch():
    model = _conv_model()
    img = torch.randn(2, 3, 37, 53)
    a = slide_inference(model, img, 5, crop=16, stride=11, batch_size=1)
    b = slide_inference(model, img, 5, crop=16, stride=11, batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = slide_inference(model, img[1:], 5, crop=16, stride=11, batch_size=4)
    torch.testing.assert_close(a[1:], c, rtol=1e-5, atol=1e-5)


def test_model_output_shape_checked():
    with pytest.raises(ValueError, match="input resolution"):
        slide_inference(lambda x: x[:, :, ::2, ::2], torch.zeros(1, 3, 20, 20), 3, crop=8, stride=8)


def test_against_mmseg_slide_inference(mmseg):
    from mmengine.config import ConfigDict
    from mmseg.models.segmentors import EncoderDecoder

    model = _conv_model(k=4)

    class Fake:  # just what EncoderDecoder.slide_inference reads from self
        test_cfg = ConfigDict(crop_size=(16, 16), stride=(12, 12))
        out_channels = 4

        def encode_decode(self, x, metas):
            return model(x)

    for h, w in [(40, 50), (10, 30), (16, 28)]:
        img = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = EncoderDecoder.slide_inference(Fake(), img, [{}])
        ours = slide_inference(model, img, 4, crop=16, stride=12, batch_size=3)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


# (h, w) -> (new_h, new_w) for scale (2048, 512), by hand:
# factor = min(2048 / long, 512 / short); new = int(old * factor + 0.5)
HAND_SIZES = {
    (512, 683): (512, 683),  # factor min(2.998, 1.0) = 1
    (375, 500): (512, 683),  # factor 512/375 = 1.3653; 500 * 1.3653 = 682.67 -> 683
    (256, 256): (512, 512),  # factor 2
    (1000, 300): (1707, 512),  # factor 512/300 = 1.7067; 1000 * 1.7067 = 1706.67 -> 1707
    (100, 1000): (205, 2048),  # factor 2048/1000 = 2.048; 204.8 -> 205
    (683, 1024): (512, 768),  # factor 512/683 = 0.74963; 1024 * 0.74963 = 767.6 -> 768
    (2000, 2000): (512, 512),  # factor 0.256
}


def test_rescale_size_by_hand():
    for (h, w), new in HAND_SIZES.items():
        assert rescale_size(h, w, (2048, 512)) == new, (h, w)
        assert rescale_size(h, w, (512, 2048)) == new  # order of scale does not matter
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert rescale_size(10, 20, 1.5) == (15, 30)


def test_rescale_size_against_mmcv():
    mmcv_image = pytest.importorskip("mmcv.image")
    rng = np.random.default_rng(0)
    sizes = list(HAND_SIZES) + [tuple(s) for s in rng.integers(16, 3000, (300, 2))]
    for h, w in sizes:
        for scale in [(2048, 512), (2048, 1024), (2048, 640), (2048, 480)]:
            new_w, new_h = mmcv_image.rescale_size((int(w), int(h)), scale)
            assert rescale_size(int(h), int(w), scale) == (new_h, new_w)


def test_resize_keep_ratio_backends():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    t = resize_keep_ratio(img, (400, 100), backend="torch")
    assert t.shape == (100, 133, 3) and t.dtype == np.uint8
    same = resize_keep_ratio(img, (400, 75), backend="torch")
    np.testing.assert_array_equal(same, img)
    try:
        import cv2  # noqa: F401
    except ImportError:
        return
    c = resize_keep_ratio(img, (400, 100), backend="cv2")
    assert c.shape == t.shape
    assert np.abs(c.astype(int) - t.astype(int)).max() <= 1  # documented difference
    # bit-exact with mmcv.imrescale when mmcv is there
    try:
        import mmcv.image as mmcv_image
    except ImportError:
        return
    for scale in [(400, 100), (2048, 512), (60, 20)]:
        ref = mmcv_image.imrescale(img, scale)
        np.testing.assert_array_equal(resize_keep_ratio(img, scale), ref)


def test_normalize():
    img = np.array([[[0, 127, 255]]], dtype=np.uint8)  # (1, 1, 3)
    x = normalize(img)
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, -0.5 / 127.5, 1.0]))


class PixelwiseModel(torch.nn.Module):
    """1x1 conv: logits at input resolution, independent of the window."""

    def __init__(self, k=6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x)


def test_predict_matches_direct_inference_when_no_resize():
    model = PixelwiseModel().eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 57, 3), dtype=np.uint8)
    # scale (57*4, 40): keep-ratio factor 1 -> no resize; pixelwise model -> slide == whole
    pred, logits = predict(model, img, 6, scale=(228, 40), crop=16, stride=12, batch_size=4,
                           return_logits=True)
    with torch.no_grad():
        direct = model(normalize(img)[None])[0]
    assert pred.shape == (40, 57) and pred.dtype == torch.int64
    torch.testing.assert_close(logits, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred, direct.argmax(0))


def test_predict_returns_original_size_after_resize():
    model = PixelwiseModel().eval()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    pred, logits = predict(model, img, 6, scale=(2048, 64), crop=32, stride=24, batch_size=2)
    assert pred.shape == (30, 45) and logits is None
    assert int(pred.min()) >= 0 and int(pred.max()) < 6
    with pytest.raises(ValueError):
        predict(model, img.astype(np.float32), 6)


def test_resize_without_opencv(monkeypatch):
    import mpm.evaluation.sliding as sliding

    monkeypatch.setattr(sliding, "_cv2", None)
    img = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert resize_keep_ratio(img, (90, 40)).shape == (40, 60, 3)  # falls back to torch
    with pytest.raises(ImportError):
        resize_keep_ratio(img, (90, 40), backend="cv2")
