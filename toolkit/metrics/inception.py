"""FID's Inception-v3 (TF "pt_inception-2015-12-05" graph) through torch-fidelity, offline-first.

FID (Heusel et al. 2017) and IS (Salimans et al. 2016) are only comparable across papers with this exact
network and its TF1-style bilinear resize to 299 px, which torch-fidelity reproduces bit for bit.
The weights are never fetched silently: pass a local file, or find it in the torch hub cache.
"""

from __future__ import annotations

import io
import os

import torch

from ..errors import PriorswapError
from ..images import quantize
from .extractor import FeatureExtractor, check_images, file_fingerprint, load_state_dict_file, require_file

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = os.path.basename(INCEPTION_URL)


def cached_inception_weights() -> str | None:
    """The torch hub cache copy of the FID weights (where torch-fidelity downloads them), if present."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    return path if os.path.isfile(path) else None


class InceptionExtractor(FeatureExtractor):
    """2048-d pool3 features (FID) and 1008-way unbiased logits (IS) of the FID Inception-v3.

    ``weights_path``: the torch-fidelity ``.pth`` (or the same state dict as ``.safetensors``). With None, the
    torch hub cache is tried, then a download if ``allow_download``; otherwise a one-line error says where to
    get the file. The path is checked here, at construction, so a bad path fails before any training.
    Images are quantised to uint8 (round(255 x)) as every reference FID implementation sees them.
    """

    dim = 2048

    def __init__(self, weights_path: str | None = None, allow_download: bool = False, weights_flag: str | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # this extractor's alone

        path = weights_path if weights_path is not None else cached_inception_weights()
        how = (
            weights_flag
            or "as the extractor's weights_path (in a recipe: --trainer.callbacks.init_args.extractor.init_args.weights_path FILE)"
        )
        if path is None and not allow_download:
            raise PriorswapError(
                f"no FID Inception weights given, and {INCEPTION_FILE} is not in the torch hub cache; download "
                f"{INCEPTION_URL} (torch-fidelity's port of the TF FID Inception-v3) and pass it {how}"
            )
        hint = f"expected torch-fidelity's FID Inception weights, {INCEPTION_FILE} from {INCEPTION_URL}"
        if path is None:  # online user who opted in: torch-fidelity downloads into the hub cache
            source, tag = None, "6726825d"
        else:
            path = require_file(path, "Inception weights", hint)
            state = load_state_dict_file(path)  # weights_only: torch-fidelity itself would unpickle anything
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            source, tag = buffer, file_fingerprint(path)
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=source
            )
        except RuntimeError as e:  # load_state_dict: wrong keys or shapes
            raise PriorswapError(
                f"Inception weights {path!r} do not fit the FID Inception-v3 ({str(e).splitlines()[0][:120]}); {hint}"
            ) from None
        except OSError as e:  # the download (URLError is an OSError): offline, or the release unreachable
            raise PriorswapError(
                f"could not download the FID Inception weights ({e}); download {INCEPTION_URL} on a machine "
                f"with internet and pass it {how}"
            ) from None
        self.name = f"inception-v3-fid-{tag}"

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            x = quantize(images)  # (B, 3, H, W) uint8, rounded as a saved PNG is
            pool, logits = self.net(x)  # (B, 2048), (B, 1008)
        return pool.float(), logits.float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(check_images(images).to(self.device))[1]

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one forward pass, for FID and IS over the same samples."""
        return self._run(check_images(images).to(self.device))
