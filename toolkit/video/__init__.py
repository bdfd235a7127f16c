"""Video diffusion pieces ported from DynamiCrafter / VideoCrafter1 (lvdm) without the lvdm code."""
