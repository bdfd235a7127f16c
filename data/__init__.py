"""What comes in: datamodules for the paper's datasets, offline ones and captioned images, plus a VAE latent cache.

Nothing here imports model code; the latent cache takes an encoder callable.
"""

from priorswap.data.base import Catalog, ImageDataModule
from priorswap.data.caption_crop import CaptionCrop
from priorswap.data.caption_sources import CaptionedFolderDataModule, DreamBoothDataModule, HFCaptionedDataModule
from priorswap.data.captioned import CaptionedDataModule, caption_key
from priorswap.data.fashion_mnist import FashionMNISTDataModule
from priorswap.data.hf import HFImageDataModule
from priorswap.data.latent_cache import CachedLatentDataset, build_latent_cache, cache_dir_for, is_complete
from priorswap.data.robust import collate_drop_none
from priorswap.data.skip_report import SkippedImagesReport
from priorswap.data.torchvision_sets import (
    Caltech101DataModule,
    Food101DataModule,
    ImageFolderDataModule,
    SUN397DataModule,
)
from priorswap.data.transforms import AdmTransform, adm_center_crop

__all__ = [
    "AdmTransform",
    "CachedLatentDataset",
    "CaptionCrop",
    "CaptionedDataModule",
    "CaptionedFolderDataModule",
    "DreamBoothDataModule",
    "HFCaptionedDataModule",
    "Caltech101DataModule",
    "Catalog",
    "FashionMNISTDataModule",
    "Food101DataModule",
    "HFImageDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SUN397DataModule",
    "SkippedImagesReport",
    "adm_center_crop",
    "build_latent_cache",
    "caption_key",
    "cache_dir_for",
    "collate_drop_none",
    "is_complete",
]
