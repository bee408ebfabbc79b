"""DVC stage `sample@<pair>`: the pair's prompt set, N images per prompt from fixed seeds, and a manifest."""

from dreamsolo.stages import sample, stage_main

if __name__ == "__main__":
    stage_main(sample.run, "sample", "pair")
