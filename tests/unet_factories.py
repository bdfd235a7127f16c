"""The tiny random UNet-adapter models live in shipped code (``priorswap.toolkit.unet.tiny``, used by
``priorswap bench unet --tiny``); the tests import them under their old name."""

from priorswap.toolkit.unet.tiny import *  # noqa: F401,F403
from priorswap.toolkit.unet.tiny import EMBED_DIM, IMAGE_SIZE, SD_SCHEDULER, TEXT_LEN  # noqa: F401
