"""Evaluation metrics: CLIP-T / CLIP-I (open_clip), LPIPS, DINO, DIV, PRES, and their aggregates.

Kept light on purpose: `aggregate` (pandas only) is imported by the report stage, while the
evaluator modules (`clip`, `lpips_metric`, `dino`, `evaluators`, `score`) pull in torch and the
model libraries and are only imported by the evaluate stage.
"""

METRICS = ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene", "clip_i_scene", "dino_scene")
"""Per-sample metric columns, in the order they appear in reports/pairs/<pair>.csv."""

NOT_PRETRAINED_WARNING = "evaluators not pretrained: numbers are not meaningful"
"""The warning when every evaluator is random."""

EVALUATOR_OF = {"clip_t": "CLIP", "clip_i": "CLIP", "dino": "DINO", "lpips_instance": "LPIPS",
                "lpips_scene": "LPIPS", "clip_i_scene": "CLIP", "dino_scene": "DINO", "div": "LPIPS", "pres": "DINO"}
"""Which evaluator each study metric comes from (PRES is DINO similarity, DIV pairwise LPIPS), in table order."""


def random_metrics(random_evaluators: set[str]) -> tuple[str, ...]:
    """The metrics (table order) whose evaluator is randomly initialised."""
    return tuple(m for m, ev in EVALUATOR_OF.items() if ev in random_evaluators)


def random_warning(metrics: tuple[str, ...] | list[str]) -> str | None:
    """One line naming exactly which numbers are not meaningful and why; None when none is random."""
    if not metrics:
        return None
    if set(metrics) == set(EVALUATOR_OF):
        return NOT_PRETRAINED_WARNING
    by_ev: dict[str, list[str]] = {}
    for m, ev in EVALUATOR_OF.items():
        by_ev.setdefault(ev, []).append(m)
    random = [f"{', '.join(ms)} ({ev})" for ev, ms in by_ev.items() if set(ms) <= set(metrics)]
    real = [f"{', '.join(ms)} ({ev})" for ev, ms in by_ev.items() if not set(ms) & set(metrics)]
    return f"random evaluators, numbers not meaningful: {'; '.join(random)}; pretrained: {'; '.join(real)}"
