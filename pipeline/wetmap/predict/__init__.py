"""Prediction: the model over sliding windows of whole scenes, mosaicked into QGIS-ready COGs.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.predict.mosaic import PredictResult, predict_mosaic, predict_scene

__all__ = ["PredictResult", "predict_mosaic", "predict_scene"]
