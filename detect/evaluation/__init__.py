"""Evaluators: COCO box AP through pycocotools, and the PASCAL VOC devkit's AP."""

from detect.evaluation.coco import (
    CocoMetrics,
    evaluate_coco,
    load_results,
    precision_recall_curves,
    save_metrics,
    to_coco_results,
)
from detect.evaluation.voc import evaluate_voc, format_voc_table

__all__ = [
    "CocoMetrics",
    "evaluate_coco",
    "evaluate_voc",
    "format_voc_table",
    "load_results",
    "precision_recall_curves",
    "save_metrics",
    "to_coco_results",
]
