"""The DiT family: class-conditional DiT fine-tunes, full or LoRA.

denoiser (DiT as a denoiser: null class id, learned sigma), lora (the LoRA design: new class rows after the base's null
row), lora_files (the LoRA export format and its loader), models (DiT sizes built from scratch).
"""
