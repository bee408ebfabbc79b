"""DVC stage `arm_inputs`: each pair's prompts, merged training settings and class priors, for the arm stages."""

from dreamsolo.stages import arm_inputs, stage_main

if __name__ == "__main__":
    stage_main(arm_inputs.run, "arm_inputs")
