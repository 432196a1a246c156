"""Faster R-CNN, VGG-16, COCO train2017 -> val2017: the ResNet paper's VGG-16 COCO baseline.

The paper reports 41.5 mAP@.5 and 21.2 mAP@[.5, .95] on COCO val (trained on
the 80k train2014 images; train2017 is train2014 plus 35k of val2014, so
expect slightly more here).

Model, RPN and Fast R-CNN settings are ``frcnn_vgg16_voc.py``'s, with the two
COCO changes of the Faster R-CNN paper: anchors of 4 scales (64 added for small
objects: 64, 128, 256, 512 x ratios 0.5, 1, 2) and background RoIs in [0, 0.5)
(already the VOC setting here). Training and test scale 600, longer side at most 1000.

Schedule. The paper trains on 8 GPUs with 8 images per RPN mini-batch and 16
per Fast R-CNN mini-batch (its alternating training), 240k iterations at lr
0.001 and then 80k at 0.0001; Caffe averages the GPUs' gradients, so that lr
is per 8-image batch. Trained jointly here, a batch holds 8 images for both
(so 8 x 128 = 1024 RoIs per batch instead of 2048), and the schedule is the
paper's as it stands: lr 0.001, 320k iterations, step at 240k; 2.56M images,
about 22 epochs of train2017. A 1k-iteration linear warm-up is added.
"""

from configs.frcnn_vgg16_voc import cfg

cfg.model.classes = None  # the 80 COCO categories, from the dataset
cfg.model.anchors.sizes = [[64.0, 128.0, 256.0, 512.0]]

cfg.data.train.type = "coco"
cfg.data.train.root = "datasets/coco/train2017"
cfg.data.train.ann_file = "datasets/coco/annotations/instances_train2017.json"
cfg.data.train.sets = []
cfg.data.val.type = "coco"
cfg.data.val.root = "datasets/coco/val2017"
cfg.data.val.ann_file = "datasets/coco/annotations/instances_val2017.json"
cfg.data.val.sets = []
cfg.data.val.filter_empty = False

cfg.train.batch_size = 8
cfg.train.base_lr = 0.001
cfg.train.max_iter = 320000
cfg.train.steps = [240000]
cfg.train.warmup_iters = 1000
cfg.train.checkpoint_period = 20000
cfg.output_dir = "output/frcnn_vgg16_coco"
