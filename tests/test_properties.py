"""Property-based tests: random COCO records, VOC xml and model inputs either work or raise
the toolkit's own ValueError, whose message names the file or the record; never a KeyError,
IndexError or TypeError from inside.

Runs are derandomized (the same examples on every machine) and print how many examples
loaded and how many were refused (``pytest -s``); each test also asserts that both happened.
"""

from __future__ import annotations

import collections
import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detect.config import load_config
from detect.data.coco import CocoDetection
from detect.data.voc import VOC_CLASSES, parse_voc_xml
from detect.models import build_model

REPO = Path(__file__).parent.parent
COCO_EXAMPLES = 300
VOC_EXAMPLES = 300
MODEL_EXAMPLES = 60
SETTINGS = dict(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# A value of the wrong kind, for any field. No subnormal floats: training flushes them to zero process-wide.
WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.text(max_size=3), st.lists(st.integers(0, 3), max_size=5), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in twenty, so that most examples keep most fields well-formed."""
    return draw(st.integers(0, 19)) == 0


@st.composite
def coco_json(draw: st.DrawFn) -> object:
    """A well-formed COCO json (boxes may be empty or reach outside the image) with 0-3 mutations:
    a field or list left out, a value of the wrong kind, an id repeated."""
    images = [
        {"id": i, "file_name": "a.jpg", "height": draw(st.integers(1, 40)), "width": draw(st.integers(1, 40))}
        for i in range(1, draw(st.integers(0, 4)) + 1)
    ]
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, draw(st.integers(1, 3)) + 1)]
    coordinate, extent = st.floats(-5, 45, allow_subnormal=False), st.one_of(st.just(0.0), st.floats(0, 30, allow_subnormal=False))
    annotations = [
        {"id": k, "image_id": draw(st.integers(1, max(len(images), 1))), "category_id": draw(st.integers(1, len(categories))),
         "bbox": [draw(coordinate), draw(coordinate), draw(extent), draw(extent)], "iscrowd": draw(st.integers(0, 1))}
        for k in range(1, draw(st.integers(0, 6)) + 1)
    ]
    raw: dict = {"images": images, "categories": categories, "annotations": annotations}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(raw)))
        records = raw[key]
        action = draw(st.sampled_from(["drop_list", "weird_list", "drop_field", "weird_field", "weird_field", "repeat_id"]))
        if action == "drop_list":
            del raw[key]
        elif action == "weird_list":
            raw[key] = draw(WEIRD)
        elif isinstance(records, list) and records:
            target = records[draw(st.integers(0, len(records) - 1))]
            if isinstance(target, dict) and target:
                field = draw(st.sampled_from(sorted(target)))
                if action == "drop_field":
                    del target[field]
                elif action == "weird_field":
                    target[field] = draw(WEIRD)
                elif isinstance(records[0], dict) and "id" in records[0]:
                    target["id"] = records[0]["id"]
    return raw if not rarely(draw) else draw(WEIRD)


COCO_RECORD = re.compile(r"(images|categories|annotations)\[\d+\]|annotation id|missing list|expected a JSON object")


def test_random_coco_records_load_or_name_the_record(tmp_path, record_property):
    ann_file = tmp_path / "instances.json"
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=COCO_EXAMPLES, **SETTINGS)
    @given(raw=coco_json(), filter_empty=st.booleans())
    def check(raw, filter_empty: bool) -> None:
        ann_file.write_text(json.dumps(raw))
        try:
            dataset = CocoDetection(tmp_path, ann_file, filter_empty=filter_empty)
        except ValueError as e:
            assert str(ann_file) in str(e) and COCO_RECORD.search(str(e)), str(e)
            outcomes["refused"] += 1
            return
        for index in range(len(dataset)):
            info, target = dataset.image_info(index), dataset.annotations(index)
            boxes = target["boxes"]
            assert boxes.shape == (len(target["labels"]), 4) and torch.isfinite(boxes).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            assert (boxes[:, 2] <= info["width"]).all() and (boxes[:, 3] <= info["height"]).all() and (boxes >= 0).all()
            assert set(target["labels"].tolist()) <= set(dataset.categories)
        outcomes["loaded"] += 1

    check()
    _report("COCO records", outcomes, record_property)


@st.composite
def voc_xml(draw: st.DrawFn) -> str:
    """An annotation file whose fields are each rarely left out or malformed; sometimes cut short.

    Box corners are drawn from -5..70 in images of 1..60 px, so boxes may be empty,
    reversed or reach outside the image.
    """
    def element(tag: str, good: str) -> str:
        if rarely(draw):
            return ""
        bad = draw(st.sampled_from(["", "nan", "inf", "-1e400", "abc", " 7 ", "-3", "2.5", "Dog", "zebra"]))
        return f"<{tag}>{bad if rarely(draw) else good}</{tag}>"

    size = element("width", str(draw(st.integers(1, 60)))) + element("height", str(draw(st.integers(1, 60))))
    objects = []
    for _ in range(draw(st.integers(0, 4))):
        box = "".join(element(k, str(draw(st.integers(-5, 70)))) for k in ("xmin", "ymin", "xmax", "ymax"))
        name = element("name", draw(st.sampled_from(VOC_CLASSES)))
        difficult = element("difficult", str(draw(st.integers(0, 1))))
        objects.append(f"<object>{name}{difficult}<bndbox>{box}</bndbox></object>")
    text = f"<annotation><size>{size}</size>{''.join(objects)}</annotation>"
    if rarely(draw):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def test_random_voc_xml_loads_or_names_the_file(tmp_path, record_property):
    path = tmp_path / "000001.xml"
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=VOC_EXAMPLES, **SETTINGS)
    @given(text=voc_xml())
    def check(text: str) -> None:
        path.write_text(text)
        try:
            image = parse_voc_xml(path, "2007", "000001")
        except ValueError as e:
            assert str(e).startswith(f"{path}: "), str(e)
            outcomes["refused"] += 1
            return
        assert image.boxes.shape == (len(image.labels), 4) and len(image.difficult) == len(image.labels)
        assert (image.boxes[:, 2:] > image.boxes[:, :2]).all() and (image.boxes >= 0).all()
        assert (image.boxes[:, 2] <= image.width).all() and (image.boxes[:, 3] <= image.height).all()
        assert set(image.labels.tolist()) <= set(range(1, 21))
        outcomes["loaded"] += 1

    check()
    _report("VOC xml", outcomes, record_property)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = load_config(REPO / "configs" / "quickstart_shapes.py", [
        "model.backbone.name=resnet18", "model.backbone.norm=frozen_bn", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32",
        "model.input.min_size=32", "model.input.max_size=48", "model.rpn.pre_nms_topk_train=50",
        "model.rpn.post_nms_topk_train=20", "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20",
        "model.rpn.batch_size_per_image=32", "model.roi_heads.batch_size_per_image=16", "train.device=cpu",
    ])
    torch.manual_seed(0)
    return build_model(cfg, {3: "car", 7: "dog"})


def _tensor(draw: st.DrawFn, shape_rank: int) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 24), min_size=shape_rank, max_size=shape_rank))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]))
    values = torch.rand(shape) * draw(st.sampled_from([1.0, 40.0]))
    if dtype.is_floating_point and values.numel() and draw(st.booleans()):
        values.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf]))
    return values.to(dtype)


@st.composite
def model_inputs(draw: st.DrawFn) -> tuple:
    """``(training, images, targets)``: mostly well-formed, each part sometimes of the wrong kind or shape."""
    images = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 2]))):
        kind = draw(st.integers(0, 19))  # 0: not a tensor, 1-4: a tensor of rank 0-3, else a good image
        if kind == 0:
            images.append(None)
        elif kind <= 4:
            images.append(_tensor(draw, kind - 1))
        else:
            images.append(torch.rand(3, draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    targets = []
    for _ in range(len(images) + (draw(st.sampled_from([1, -1])) if rarely(draw) else 0)):
        n = draw(st.integers(0, 3))
        xy = torch.rand(n, 2) * 20
        target = {"boxes": torch.cat([xy, xy + 1 + torch.rand(n, 2) * 15], dim=1),
                  "labels": torch.tensor(draw(st.lists(st.sampled_from([3, 7]), min_size=n, max_size=n)), dtype=torch.int64)}
        damage = draw(st.integers(0, 5)) if draw(st.integers(0, 3)) == 0 else 0
        if damage == 1:
            target["boxes"] = _tensor(draw, draw(st.integers(0, 3)))
        elif damage == 2:
            target["labels"] = _tensor(draw, draw(st.integers(0, 2)))
        elif damage == 3 and n:
            target["labels"] = torch.tensor([draw(st.integers(-1, 9))] * n)
        elif damage == 4:
            del target[draw(st.sampled_from(["boxes", "labels"]))]
        elif damage == 5:
            target = draw(st.one_of(st.none(), st.integers(), st.just([1, 2])))
        targets.append(target)
    training = draw(st.booleans())
    wrap = draw(st.sampled_from(["tuple", "none"])) if rarely(draw) else "list"
    return training, images, None if wrap == "none" else (tuple(targets) if wrap == "tuple" else targets)


MODEL_INPUT = re.compile(
    r"image at index \d|target at index \d|images must be|training needs targets|targets must be|images but \d+ targets"
)


def test_random_model_inputs_run_or_name_the_input(tiny_model, record_property):
    outcomes: collections.Counter = collections.Counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    @settings(max_examples=MODEL_EXAMPLES, **SETTINGS)
    @given(inputs=model_inputs())
    def check(inputs: tuple) -> None:
        training, images, targets = inputs
        tiny_model.train(training)
        try:
            output = tiny_model(images, targets) if training else tiny_model(images)
        except ValueError as e:
            assert MODEL_INPUT.search(str(e)), str(e)
            outcomes["refused"] += 1
            return
        if training:
            assert set(output) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
        else:
            assert len(output) == len(images)
        outcomes["ran"] += 1

    try:
        check()
    finally:
        torch.set_num_threads(threads)
    _report("model inputs", outcomes, record_property)


def _report(name: str, outcomes: collections.Counter, record_property) -> None:
    total = sum(outcomes.values())
    print(f"{name}: {total} examples, " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    record_property("examples", dict(outcomes))
    assert len(outcomes) == 2, f"{name}: only {dict(outcomes)}; the strategy should produce both outcomes"
