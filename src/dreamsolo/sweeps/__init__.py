"""Hyperparameter sweeps: declared in sweeps.yaml (`spec`), run as DVC experiments (`queue`), read back
from those experiments (`results`) and summarised into a report (`summary`, `plots`, `report`)."""
