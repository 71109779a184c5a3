"""Evaluation: exact masked confusion counts per region, scores, and the report.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.evaluate.report import EvaluateResult, RegionScores, Scores, evaluate

__all__ = ["EvaluateResult", "RegionScores", "Scores", "evaluate"]
