"""The latent + caption-embedding cache a text-to-image fine-tune trains from (frozen text encoders).

The mechanism lives with the data (``priorswap.data.captioned_cache``): the captioned datamodules offer it through
``t2i_cache`` (the cache root, or None) and ``build_t2i_cache(encode, encoder_id)``, which ``T2IFineTune.setup``
calls with its own ``encode_items`` and ``cache_identity``. Re-exported here for code that builds a cache by hand.
"""

from priorswap.data.captioned_cache import CachedT2IDataset, T2IEncoder, build_t2i_cache, collate_items, t2i_cache_dir

__all__ = ["CachedT2IDataset", "T2IEncoder", "build_t2i_cache", "collate_items", "t2i_cache_dir"]
