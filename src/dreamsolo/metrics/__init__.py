"""Evaluation metrics: CLIP-T / CLIP-I (open_clip), LPIPS, DINO, DIV, PRES, and their aggregates.

Kept light on purpose: `aggregate` (pandas only) is imported by the report stage, while the
evaluator modules (`clip`, `lpips_metric`, `dino`, `evaluators`, `score`) pull in torch and the
model libraries and are only imported by the evaluate stage.
"""

METRICS = ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene")
"""Per-sample metric columns, in the order they appear in reports/pairs/<pair>.csv."""

NOT_PRETRAINED_WARNING = "evaluators not pretrained: numbers are not meaningful"
