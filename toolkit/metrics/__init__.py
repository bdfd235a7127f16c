"""Evaluation metrics: feature extractors, Fréchet distance, Inception Score, paired-image similarities.

Pure PyTorch (no Lightning): callbacks and the CLI assemble these. Every pretrained weight is a local path.
"""

from .clip import CLIPSimilarity
from .dinov2 import DINOV2_MODEL, DINOv2Extractor
from .extractor import FeatureExtractor, ModuleExtractor, load_feature_network
from .factory import EXTRACTORS, build_extractor
from .frechet import feature_stats, frechet_distance
from .inception import INCEPTION_URL, InceptionExtractor
from .inception_score import inception_score
from .kid import KIDReference, kernel_inception_distance
from .lpips import LPIPS
from .pixel import psnr, ssim
from .reference import reference_stats
from .similarity import dino_similarity, feature_cosine
from .stats import FeatureStats, extract_stats

__all__ = [
    "CLIPSimilarity",
    "DINOV2_MODEL",
    "DINOv2Extractor",
    "EXTRACTORS",
    "FeatureExtractor",
    "FeatureStats",
    "INCEPTION_URL",
    "InceptionExtractor",
    "KIDReference",
    "LPIPS",
    "ModuleExtractor",
    "build_extractor",
    "dino_similarity",
    "extract_stats",
    "feature_cosine",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_feature_network",
    "psnr",
    "reference_stats",
    "ssim",
]
