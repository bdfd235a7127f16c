"""One module per ``priorswap`` sub-command; each exposes ``register(subparsers)``."""
