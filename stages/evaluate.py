"""DVC stage `evaluate@<pair>`: per-sample metrics and the pair's aggregates (reports/pairs/<pair>.*)."""

from dreamsolo.cli import stage_main
from dreamsolo.evaluation import evaluate_stage

if __name__ == "__main__":
    stage_main(evaluate_stage, "evaluate", "pair")
