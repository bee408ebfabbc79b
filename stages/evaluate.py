"""DVC stage `evaluate@<pair>`: per-sample metrics and the pair's aggregates (reports/pairs/<pair>.*)."""

from dreamsolo.stages import evaluate, stage_main

if __name__ == "__main__":
    stage_main(evaluate.run, "evaluate", "pair")
