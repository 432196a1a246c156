"""Detectron2's faster_rcnn_R_50_FPN_3x, converted: box AP 40.2 on COCO val2017 (Detectron2's figure).

    wget https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl
    python tools/convert_detectron2.py model_final_280758.pkl weights/d2_faster_rcnn_R_50_FPN_3x.pth
    python tools/test.py configs/zoo/d2_faster_rcnn_R_50_FPN_3x.py --weights weights/d2_faster_rcnn_R_50_FPN_3x.pth

Training with this config (tools/train.py) starts from the ImageNet file that
model.backbone.weights names, Detectron2's (see its MODEL_ZOO.md). See
configs/zoo/detectron2.py for what differs from detect's defaults.
"""

from configs.zoo.detectron2 import detectron2_config

cfg = detectron2_config("R_50_FPN_3x")
