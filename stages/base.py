"""DVC stage `base`: materialise the preset's base model as a diffusers folder in models/base/<preset>."""

from dreamsolo.stages import base, stage_main

if __name__ == "__main__":
    stage_main(base.run, "base")
