"""The seed study's seven claims, each as a test on the study's samples and its sweeps (issue 28): which
effect decides it, signed so that > 0 is the claim, its bootstrap interval and verdict (metrics.findings).
pandas and numpy only; report/findings.py writes the page.

Fidelity is the LPIPS of the <S> prompt's samples to the instance photo; drift the LPIPS of the class
prompt's samples to the base model's (same seed). Sensitivity, defined once: the spread (largest minus
smallest) of an outcome's mean across the values of the swept keys, the other swept keys averaged; a
category's mean is over its pairs, each pair's over its seeds. Both outcomes are in LPIPS, so spreads and
their differences are too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dreamsolo.metrics import findings as F

LR_STEPS, PRIOR = "lr_steps_all", "prior_weight"
"""The sweeps (sweeps.yaml) that claims 2 and 4-6 read: reports/sweeps/<name>/samples.csv."""
OUTCOMES = ("lpips_instance", "class_drift")
OUTCOME_LABEL = {"lpips_instance": "fidelity", "class_drift": "drift"}
ORGANIC = ("animal", "human")
SENSITIVITY = ("sensitivity of an outcome (fidelity: LPIPS of the <S> prompt's samples to the instance photo; "
               "drift: LPIPS of the class prompt's samples to the base model's, same seed) to swept keys = "
               "the largest minus the smallest mean of the outcome across the keys' values (the other swept "
               "keys averaged); a category's mean is over its pairs, each pair's over its seeds")


@dataclass(frozen=True)
class Part:
    name: str
    label: str
    estimate: F.Estimate | None
    smallest: float
    verdict: str

    def as_dict(self) -> dict:
        return {"label": self.label, "smallest": self.smallest, "verdict": self.verdict,
                **(self.estimate.as_dict() if self.estimate else {})}


@dataclass(frozen=True)
class Claim:
    n: int
    text: str
    test: str
    parts: tuple[Part, ...] = ()
    note: str = ""  # why not run, or what the numbers leave out
    command: str = ""  # what to run when the data is missing
    context: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return F.NOT_RUN if not self.parts else F.combine([p.verdict for p in self.parts])

    def as_dict(self) -> dict:
        return {"claim": self.text, "test": self.test, "verdict": self.verdict, "note": self.note,
                "command": self.command, "parts": {p.name: p.as_dict() for p in self.parts}, **self.context}


@dataclass(frozen=True)
class Inputs:
    tuned: pd.DataFrame  # the study's per-sample scores (reports/pairs/*.csv)
    base: pd.DataFrame  # the base model's on the same prompts and seeds (reports/pairs_base/*.csv)
    categories: dict[str, str]  # pair -> category
    random: frozenset[str] = frozenset()  # per-sample columns whose evaluator is random
    sweeps: dict[str, pd.DataFrame | str] = field(default_factory=dict)  # name -> samples.csv, or why not


def sweep_command(name: str) -> str:
    return f"dreamsolo sweep {name} -j 2"


def _part(name: str, label: str, units: list[F.Unit], stat: F.Statistic, smallest: float,
          random: bool = False, stratify: bool = True) -> Part:
    if random:
        return Part(name, label, None, smallest, F.NOT_MEANINGFUL)
    est = F.bootstrap(units, stat, F.seed_of(name), stratify=stratify)
    return Part(name, label, est, smallest, F.verdict(est, smallest))


def _closer(inp: Inputs, name: str, label: str, kind: str, column: str) -> Part:
    """base - tuned per seed of an LPIPS column (> 0: the fine-tuned samples are closer to the photo)."""
    units = F.paired_units(F.by_seed(inp.base, kind, column), F.by_seed(inp.tuned, kind, column), inp.categories)
    return _part(name, label, units, F.mean_effect, F.MIN_LPIPS, column in inp.random)


def claim1(inp: Inputs) -> Claim:
    return Claim(1, "One reference image is enough to bind an instance to an identifier and place it in a learned "
                    "scene.",
                 "The <S> prompt's and the composed prompt's samples are closer (LPIPS) to the instance photo than "
                 "the base model's on the same prompts and seeds.",
                 (_closer(inp, "c1_binding", "<S> prompt → instance: base − fine-tuned", "instance", "lpips_instance"),
                  _closer(inp, "c1_placed", "composed prompt → instance: base − fine-tuned", "composed",
                          "lpips_instance")))


def claim3(inp: Inputs) -> Claim:
    return Claim(3, "Stage II keeps what Stage I learned (the scene): the two stages compose.",
                 "After Stage II, the <V> prompt's and the composed prompt's samples are closer (LPIPS) to the "
                 "scene photo than the base model's.",
                 (_closer(inp, "c3_scene_kept", "<V> prompt → scene: base − fine-tuned", "scene", "lpips_scene"),
                  _closer(inp, "c3_composed", "composed prompt → scene: base − fine-tuned", "composed", "lpips_scene")))


def claim7(inp: Inputs) -> Claim:
    text = "Fidelity is weaker in complex instance–scene combinations."
    test = ("Across pairs, the composed prompt's fidelity loss (fine-tuned − base LPIPS to the instance) rises with "
            "the combination's complexity (how poorly the base model itself draws the composed prompt: "
            "−CLIP-T of its composed samples): Pearson r > 0.")
    if len(inp.categories) < 4:
        return Claim(7, text, test, note=f"{len(inp.categories)} pairs: a correlation over pairs needs at least 4",
                     command="dvc repro (with more pairs in params.yaml)")
    tables = [F.by_seed(inp.base, "composed", "clip_t"), F.by_seed(inp.tuned, "composed", "lpips_instance"),
              F.by_seed(inp.base, "composed", "lpips_instance")]
    units = F.stacked_units(tables, inp.categories)

    def r(us: Sequence[F.Unit]) -> float:
        m = np.array([a.mean(axis=0) for _, a in us])
        return F.correlation(-m[:, 0], m[:, 1] - m[:, 2])

    part = _part("c7_complexity", "r(complexity, composed fidelity loss)", units, r, F.MIN_R,
                 random="clip_t" in inp.random or "lpips_instance" in inp.random, stratify=False)
    return Claim(7, text, test, (part,))


# --- the sweeps -----------------------------------------------------------------------------------------

def _key(samples: pd.DataFrame, suffix: str) -> str | None:
    """The swept column whose last segment is `suffix` (lr, steps, prior_weight): any preset's key."""
    keys = [c for c in samples.columns if c.split(".")[-1] == suffix and "." in c]
    return keys[0] if len(keys) == 1 else None


def _groups(points: pd.DataFrame, keys: Sequence[str]) -> list[np.ndarray]:
    """Index arrays (into `points`' rows) of the points sharing each value of `keys`."""
    return [np.asarray(idx) for idx in points.reset_index(drop=True).groupby(list(keys), sort=True).indices.values()]


@dataclass(frozen=True)
class _Sweep:
    samples: pd.DataFrame  # its samples.csv without the baseline
    points: pd.DataFrame  # one row per point: point + swept keys
    keys: dict[str, str]  # suffix -> column


def _sweep(inp: Inputs, name: str, suffixes: Sequence[str]) -> _Sweep | str:
    s = inp.sweeps.get(name)
    if s is None or isinstance(s, str):
        return s or f"sweep {name} has no report"
    keys = {x: _key(s, x) for x in suffixes}
    if None in keys.values():
        return f"sweep {name} does not sweep {', '.join(x for x, k in keys.items() if k is None)}"
    rows = s[s["point"] != "baseline"]
    points = rows[["point", *keys.values()]].drop_duplicates("point").reset_index(drop=True)
    for x, k in keys.items():
        if points[k].nunique() < 2:
            return f"sweep {name} has fewer than two finished values of {k}"
    missing = [c for c in OUTCOMES if c in inp.random]
    if missing:
        return f"sweep {name}: {', '.join(missing)} from a random evaluator"
    return _Sweep(rows, points, keys)


def _not_run(n: int, text: str, test: str, why: str, names: Sequence[str]) -> Claim:
    return Claim(n, text, test, note=why, command=" && ".join(sweep_command(x) for x in names))


def _sweep_numbers(name: str, label: str, units: list[F.Unit], parts, context: dict[str, dict]):
    """One bootstrap pass over a sweep claim's numbers: `parts(us)` gives the claim's (fidelity, drift) effect,
    `context` {group: {key: fn(us) -> (fidelity, drift)}} the sensitivities shown beside it, each with its own
    interval. Returns (parts, context as {group: {key: {fidelity, drift: estimate}}})."""
    fns = [parts] + [f for block in context.values() for f in block.values()]
    ests = F.bootstrap_many(units, lambda us: np.concatenate([np.asarray(f(us), dtype=float) for f in fns]),
                            F.seed_of(name))
    made = [_judged(f"{name}_{o}", f"{label}, {OUTCOME_LABEL[o]}", ests[i], F.MIN_LPIPS)
            for i, o in enumerate(OUTCOMES)]
    rest, ctx = iter(ests[len(OUTCOMES):]), {}
    for group, block in context.items():
        ctx[group] = {k: {OUTCOME_LABEL[o]: next(rest).as_dict() for o in OUTCOMES} for k in block}
    return tuple(made), ctx


def _judged(name: str, label: str, est: F.Estimate, smallest: float) -> Part:
    return Part(name, label, est, smallest, F.verdict(est, smallest))


def claim2(inp: Inputs) -> Claim:
    text = "The prior-preservation loss keeps the model's general knowledge (λ > 0 against λ = 0)."
    test = ("Class drift (LPIPS of the class prompt's samples to the base model's, same seed) is lower with the "
            "study's Stage II λ than with λ = 0: drift(λ = 0) − drift(study's λ) > 0.")
    sw = _sweep(inp, PRIOR, ["prior_weight"])
    if isinstance(sw, str):
        return _not_run(2, text, test, sw, [PRIOR])
    s, k = inp.sweeps[PRIOR], sw.keys["prior_weight"]
    base_rows, zero = s[s["point"] == "baseline"], sw.points[sw.points[k] == 0]
    lam = base_rows[k].iloc[0]  # NaN: the study sets it in a lower layer (the baseline has no such key)
    if zero.empty or lam == 0:
        return _not_run(2, text, test, f"sweep {PRIOR} needs a point at λ = 0 and a study λ > 0", [PRIOR])
    units = F.sweep_units(s, [zero["point"].iloc[0], "baseline"], ["class_drift"])
    units = [(c, a[:, 0, 0] - a[:, 1, 0]) for c, a in units]
    study = "the study's λ" if pd.isna(lam) else f"λ = {float(lam):g} (the study's)"
    part = _part("c2_drift", f"class drift: λ = 0 minus {study}", units, F.mean_effect, F.MIN_LPIPS)
    return Claim(2, text, test, (part,), note="Stage II's λ is swept; Stage I keeps the study's.")


def _spread(us: Sequence[F.Unit], cats: Sequence[str] | None, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Per outcome, the sensitivity of the pairs of `cats` to the keys that `groups` splits the points by."""
    return F.spread(F.point_means(us, cats), groups)


def claim4(inp: Inputs) -> Claim:
    text = "Learning rate and step count are the critical hyperparameters, more than the prior weight."
    test = ("Over all pairs, the larger of the sensitivities to lr and to steps minus the sensitivity to the prior "
            "weight > 0, for fidelity and for drift.")
    a, b = _sweep(inp, LR_STEPS, ["lr", "steps"]), _sweep(inp, PRIOR, ["prior_weight"])
    if isinstance(a, str) or isinstance(b, str):
        return _not_run(4, text, test, "; ".join(x for x in (a, b) if isinstance(x, str)), [LR_STEPS, PRIOR])
    both = pd.concat([a.samples.assign(point=LR_STEPS + "/" + a.samples["point"]),
                      b.samples.assign(point=PRIOR + "/" + b.samples["point"])], ignore_index=True)
    names_a, names_b = [f"{LR_STEPS}/{p}" for p in a.points["point"]], [f"{PRIOR}/{p}" for p in b.points["point"]]
    units = F.sweep_units(both, names_a + names_b, OUTCOMES)  # both sweeps' points side by side, per pair and seed
    na = len(names_a)
    g = {"lr": _groups(a.points, [a.keys["lr"]]), "steps": _groups(a.points, [a.keys["steps"]]),
         "prior_weight": [x + na for x in _groups(b.points, [b.keys["prior_weight"]])]}

    def effect(us):
        m = F.point_means(us)
        return np.maximum(F.spread(m, g["lr"]), F.spread(m, g["steps"])) - F.spread(m, g["prior_weight"])

    sens = {k: (lambda us, gk=gk: _spread(us, None, gk)) for k, gk in g.items()}
    parts, ctx = _sweep_numbers("c4", "max(S_lr, S_steps) − S_λ", units, effect, {"sensitivity": sens})
    return Claim(4, text, test, parts, context=ctx)


def _lr_steps(inp: Inputs, n: int, text: str, test: str, needs: Sequence[str]):
    sw = _sweep(inp, LR_STEPS, ["lr", "steps"])
    if isinstance(sw, str):
        return _not_run(n, text, test, sw, [LR_STEPS])
    have = set(sw.samples["category"])
    if not set(needs) <= have:
        return _not_run(n, text, test, f"sweep {LR_STEPS} holds no {', '.join(sorted(set(needs) - have))} pair",
                        [LR_STEPS])
    return sw, F.sweep_units(sw.samples, list(sw.points["point"]), OUTCOMES), \
        _groups(sw.points, [sw.keys["lr"], sw.keys["steps"]])


def _by_category(units, groups) -> dict[str, dict]:
    """The sensitivity to lr x steps of each category, for the page beside the claim."""
    cats = sorted({c for c, _ in units})
    return {"sensitivity_by_category": {c: (lambda us, c=c: _spread(us, [c], groups)) for c in cats}}


def claim5(inp: Inputs, best: dict | None = None) -> Claim:
    text = ("Inanimate objects tolerate more aggressive optimization (higher lr / more steps) than organic subjects; "
            "their best settings differ by category.")
    test = ("The sensitivity to lr × steps of organic pairs (animals and humans) minus that of objects > 0, for "
            "fidelity and for drift: objects' outcomes move less across the grid.")
    got = _lr_steps(inp, 5, text, test, ["object", *ORGANIC])
    if isinstance(got, Claim):
        return got
    _, units, groups = got

    def effect(us):
        return _spread(us, ORGANIC, groups) - _spread(us, ["object"], groups)

    parts, ctx = _sweep_numbers("c5", "S(organic) − S(object)", units, effect, _by_category(units, groups))
    note = ("For the claim's second half, the best point per category by the sweep's rule is listed, without an "
            "interval (an argmax of noisy means has none here)." if best else
            "The claim's second half (best settings differ by category) needs the sweep's best.json.")
    return Claim(5, text, test, parts, note=note, context={**ctx, "best_by_category": best or {}})


def claim6(inp: Inputs) -> Claim:
    text = "Human faces are the most sensitive to hyperparameter choice."
    test = ("The sensitivity to lr × steps of human pairs minus the larger of objects' and animals' > 0, for "
            "fidelity and for drift.")
    got = _lr_steps(inp, 6, text, test, ["human", "object", "animal"])
    if isinstance(got, Claim):
        return got
    _, units, groups = got

    def effect(us):
        return _spread(us, ["human"], groups) - np.maximum(_spread(us, ["object"], groups),
                                                           _spread(us, ["animal"], groups))

    parts, ctx = _sweep_numbers("c6", "S(human) − max(S(object), S(animal))", units, effect,
                                _by_category(units, groups))
    return Claim(6, text, test, parts, context=ctx,
                 note="The claim names faces; the test is on the study's human category, whatever its photos show.")


def all_claims(inp: Inputs, best: dict | None = None) -> list[Claim]:
    return [claim1(inp), claim2(inp), claim3(inp), claim4(inp), claim5(inp, best), claim6(inp), claim7(inp)]


def stale(samples: pd.DataFrame, tuned: pd.DataFrame) -> str | None:
    """Why a sweep's baseline is not this study (another commit's numbers), or None: its baseline fidelity
    per pair and seed must equal the study's."""
    base = samples[samples["point"] == "baseline"].set_index(["pair", "seed"])["lpips_instance"]
    if base.empty:  # the sweep report left it out: HEAD's committed results were not its own (sweeps.collect)
        return "its report has no baseline (the study was not reproduced when it was written): rerun it"
    here = F.by_seed(tuned, "instance", "lpips_instance").stack()
    here.index = here.index.set_names(["pair", "seed"])
    common = base.index.intersection(here.index)
    if len(common) < len(base) or not np.allclose(base.loc[common], here.loc[common], atol=1e-6):
        return "its baseline is not this study's results (the sweep ran on another version): rerun it"
    return None


__all__ = ["Claim", "Inputs", "Part", "all_claims", "stale", "sweep_command", "SENSITIVITY"]
