"""DVC stage `train_scene@<pair>`: Stage I, the base model learns the scene as `<V> <scene class>`."""

from functools import partial

from dreamsolo.stages import stage_main, train

if __name__ == "__main__":
    stage_main(partial(train.run, stage="train_scene"), "train_scene", "pair")
