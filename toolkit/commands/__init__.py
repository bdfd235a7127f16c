"""One module per ``priorswap`` sub-command: each exposes ``COMMAND`` (an ``argspec.Command``), or ``COMMANDS``
(its kinds, by name) and ``HELP``; ``priorswap.toolkit.cli`` builds the parser from them."""
