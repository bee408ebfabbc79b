"""DVC stage `prepare@<pair>`: validated, upright, square RGB copies of the pair's two photos."""

from dreamsolo.stages import prepare, stage_main

if __name__ == "__main__":
    stage_main(prepare.run, "prepare", "pair")
