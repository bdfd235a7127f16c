"""The tiny random UNet-adapter models live in shipped code (``priorswap.toolkit.tiny``, used by
``priorswap bench unet --tiny``); the tests import them under their old name."""
from priorswap.toolkit.tiny import *  # noqa: F401,F403
from priorswap.toolkit.tiny import IMAGE_SIZE, EMBED_DIM, TEXT_LEN, SD_SCHEDULER  # noqa: F401
