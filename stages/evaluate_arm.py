"""DVC stage `evaluate_arm@<pair>-<arm>`: an arm's samples scored against the pair's references and the floor."""

from dreamsolo.stages import evaluate, stage_main

if __name__ == "__main__":
    stage_main(evaluate.run_arm, "evaluate_arm", "pair", "arm")
