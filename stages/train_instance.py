"""DVC stage `train_instance@<pair>`: Stage II, from Stage I's weights, learns the instance as `<S> <class>`."""

from functools import partial

from dreamsolo.cli import stage_main
from dreamsolo.training.stage import train_pair

if __name__ == "__main__":
    stage_main(partial(train_pair, stage="train_instance"), "train_instance", "pair")
