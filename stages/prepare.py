"""DVC stage `prepare@<pair>`: validated, upright, square RGB copies of the pair's two photos."""

from dreamsolo.cli import stage_main
from dreamsolo.prepare import prepare_stage

if __name__ == "__main__":
    stage_main(prepare_stage, "prepare", "pair")
