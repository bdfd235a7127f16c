"""Text-to-image fine-tunes and LoRAs sampled through diffusers' own pipelines (SD1.x/2.x, SDXL, SD3/SD3.5,
PixArt-alpha/Sigma), with the unconditional half of each CFG step answered by a prior.

- ``load``: the pipeline class from ``model_index.json``, LoRA loading, and the refusals (FLUX, LoRA-less free prior);
- ``pairing``: may a prior stand in for a model (same latent space, same kind of schedule), checked before sampling;
- ``swap``: the diffusers hook on the denoiser that routes the unconditional half to the prior;
- ``run``: load -> prepare -> rows (vanilla = the pipeline as diffusers runs it; swapped = the same call, hook on);
- ``guider``: ``PriorSwapGuidance``, the swap as a guider for diffusers' modular pipelines;
- ``tiny``: tiny random SDXL, SD3 and PixArt pipelines for tests.
"""
