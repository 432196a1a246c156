from detect.models.build import build_model, place_model
from detect.models.faster_rcnn import FasterRCNN

__all__ = ["build_model", "place_model", "FasterRCNN"]
