from detect.engine.inference import evaluate_model, predict_dataset
from detect.engine.trainer import train

__all__ = ["evaluate_model", "predict_dataset", "train"]
