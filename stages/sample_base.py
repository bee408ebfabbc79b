"""DVC stage `sample_base@<pair>`: the pair's prompt set from the base model (the floor), same seeds and manifest."""

from dreamsolo.stages import sample, stage_main

if __name__ == "__main__":
    stage_main(sample.run_base, "sample_base", "pair")
