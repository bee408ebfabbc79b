"""DVC stage `generate_priors@<class>`: class images of the base model, shared by the pairs of a class."""

from dreamsolo.stages import generate_priors, stage_main

if __name__ == "__main__":
    stage_main(generate_priors.run, "generate_priors", "class")
