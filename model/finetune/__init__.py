"""Downstream heads on a pre-trained QFT image side: classification, segmentation, detection, report generation."""
from .heads import (ClassificationHead, DetectionHead, SegmentationHead, detection_loss, generate_answers,
                    load_labels, multilabel_loss, pooled_features)
from .classify import auroc, finetune_classifier

__all__ = ["ClassificationHead", "SegmentationHead", "DetectionHead", "detection_loss", "multilabel_loss",
           "generate_answers", "load_labels", "pooled_features", "auroc", "finetune_classifier"]
