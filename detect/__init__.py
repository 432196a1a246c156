"""detect: Faster R-CNN with deep residual backbones."""

from detect.config import Config, load_config

__all__ = ["Config", "load_config"]
