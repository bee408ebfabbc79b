"""DVC stage `sample@<pair>`: the pair's prompt set, N images per prompt from fixed seeds, and a manifest."""

from dreamsolo.cli import stage_main
from dreamsolo.samples import sample_pair

if __name__ == "__main__":
    stage_main(sample_pair, "sample", "pair")
