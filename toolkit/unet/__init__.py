"""The UNet family: InstructPix2Pix, Zero-1-to-3, Versatile Diffusion, and the SD/PixArt text-to-image priors.

denoiser (the shared UNet wrapper), ip2p / zero123 / versatile (each model's conditions and nulls), text_prior (SD and
PixArt unconditional priors, prompt encoding), load (each kind from a folder or hub id), run (load -> prepare ->
rows for ``sample ip2p|zero123|vd``), tiny (tiny random pipelines for tests and benchmarks, built offline).
Text-to-image fine-tunes and LoRAs (``sample t2i``, ``sample sd``) are the ``t2i`` family.
"""
