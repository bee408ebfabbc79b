"""DVC stage `base`: materialise the preset's base model as a diffusers folder in models/base/<preset>."""

from dreamsolo.cli import stage_main
from dreamsolo.models.base import base_stage

if __name__ == "__main__":
    stage_main(base_stage, "base")
