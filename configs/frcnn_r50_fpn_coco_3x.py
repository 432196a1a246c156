"""Faster R-CNN, ResNet-50-FPN, COCO 2017, the 3x schedule (Detectron2's recipe).

270k iterations at 16 images per batch, lr 0.02 (steps at 210k and 250k),
multi-scale training (shorter side 640-800). Expected box AP on val2017: 40.2
(Detectron2), 40.3 (MMDetection).
"""

from configs.frcnn_r50_fpn_coco import cfg

cfg.data.train_min_sizes = [640, 672, 704, 736, 768, 800]
cfg.train.max_iter = 270000
cfg.train.steps = [210000, 250000]
cfg.output_dir = "output/frcnn_r50_fpn_coco_3x"
