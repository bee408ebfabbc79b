"""DVC stage `sample_base@<pair>`: the pair's prompt set from the base model (the floor), same seeds and manifest."""

from dreamsolo.cli import stage_main
from dreamsolo.samples import sample_base_pair

if __name__ == "__main__":
    stage_main(sample_base_pair, "sample_base", "pair")
