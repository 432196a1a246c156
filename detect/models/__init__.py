from detect.models.build import build_model
from detect.models.faster_rcnn import FasterRCNN

__all__ = ["build_model", "FasterRCNN"]
