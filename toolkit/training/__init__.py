"""Lightning training of DiT with CFG dropout (the only Lightning user in toolkit/, with the CLI)."""
