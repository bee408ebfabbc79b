"""DVC stage `generate_priors@<class>`: class images of the base model, shared by the pairs of a class."""

from dreamsolo.cli import stage_main
from dreamsolo.priors import generate_priors

if __name__ == "__main__":
    stage_main(generate_priors, "generate_priors", "class")
