"""DVC stage `train_arm@<pair>-<arm>`: one alternative to the method (params `arms`) trained on one pair."""

from dreamsolo.stages import stage_main, train_arm

if __name__ == "__main__":
    stage_main(train_arm.run, "train_arm", "pair", "arm")
