"""DVC stage `train_instance@<pair>`: Stage II, from Stage I's weights, learns the instance as `<S> <class>`."""

from functools import partial

from dreamsolo.stages import stage_main, train

if __name__ == "__main__":
    stage_main(partial(train.run, stage="train_instance"), "train_instance", "pair")
