"""DVC stage `sample_arm@<pair>-<arm>`: the pair's prompt set from an arm's weights, same seeds as the method."""

from dreamsolo.stages import sample, stage_main

if __name__ == "__main__":
    stage_main(sample.run_arm, "sample_arm", "pair", "arm")
