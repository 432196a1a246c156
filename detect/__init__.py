"""detect: Faster R-CNN with deep residual backbones."""

from detect.config import Config, load_config
from detect.models import build_model

__all__ = ["Config", "build_model", "load_config"]
