"""DVC stage `train_scene@<pair>`: Stage I, the base model learns the scene as `<V> <scene class>`."""

from functools import partial

from dreamsolo.cli import stage_main
from dreamsolo.training.stage import train_pair

if __name__ == "__main__":
    stage_main(partial(train_pair, stage="train_scene"), "train_scene", "pair")
