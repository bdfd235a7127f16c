"""The shipped LightningCLI recipes (YAML), installed as package data so ``priorswap fit -c NAME.yaml`` and
``priorswap demo`` work from a wheel install too."""
