"""Text-to-image: the prior swap for standard and modular diffusers pipelines (sampling, guider, tiny builders)."""
