"""The options that make detect compute what Detectron2 computes, on hand-worked values."""

import math

import torch

from detect.models.anchors import AnchorGenerator, cell_anchors
from detect.models.transform import ImageTransform


def test_exact_anchors():
    # size 32 at ratio 0.5 (h / w): w = 32 / sqrt(0.5) = 45.2548..., h = 32 * sqrt(0.5) = 22.6274...
    half_w, half_h = 16 * math.sqrt(2), 8 * math.sqrt(2)
    exact = cell_anchors([32.0], [0.5, 1.0], rounded=False)
    torch.testing.assert_close(exact, torch.tensor([[-half_w, -half_h, half_w, half_h], [-16.0, -16.0, 16.0, 16.0]]))
    assert cell_anchors([32.0], [0.5], rounded=True).tolist() == [[-23.0, -11.0, 23.0, 11.0]]  # torchvision's


def test_nominal_strides():
    # a 100 px wide image at stride 16 has 7 columns: torchvision's stride is 100 // 7 = 14, Detectron2's 16
    sizes, ratios = [[32.0]], [1.0]
    by_size = AnchorGenerator(sizes, ratios)([(7, 7)], (100, 100), torch.device("cpu"))[0]
    nominal = AnchorGenerator(sizes, ratios, rounded=False, strides=[16])([(7, 7)], (100, 100), torch.device("cpu"))[0]
    assert by_size[1].tolist() == [14 - 16, -16, 14 + 16, 16]  # the anchor of column 1
    assert nominal[1].tolist() == [0.0, -16.0, 32.0, 16.0]
    assert nominal[-1].tolist() == [96 - 16, 96 - 16, 96 + 16, 96 + 16]


def test_bgr_0_255_input():
    transform = ImageTransform(4, 4, 1, [103.53, 116.28, 123.675], [1.0, 2.0, 4.0], channel_order="bgr", pixel_scale=255.0)
    image = torch.zeros(3, 4, 4)
    image[0], image[1], image[2] = 1.0, 0.5, 0.0  # R, G, B
    batch, _ = transform.eval()([image])
    pixel = batch.tensors[0, :, 0, 0]
    # channel 0 is blue (0), 1 green (127.5), 2 red (255)
    torch.testing.assert_close(pixel, torch.tensor([-103.53, (127.5 - 116.28) / 2, (255 - 123.675) / 4]))
