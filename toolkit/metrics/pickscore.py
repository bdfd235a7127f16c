"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on human preferences, ``yuvalkirstain/PickScore_v1`` with
the ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` processor, both through transformers, as its authors' example does.

score(image, prompt) = exp(logit_scale) * cos(E_img(image), E_txt(prompt)). The paper's Table 5 reports PickScore
*against InstructPix2Pix*: the preference probability softmax([s_method, s_ip2p])[0] = sigmoid(s_method - s_ip2p),
averaged over samples (vanilla against itself is 0.5 by definition): :func:`preference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from transformers import CLIPModel, CLIPProcessor

from ..errors import PriorswapError
from ..images import to_uint8

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScore(nn.Module):
    def __init__(self, model: str = PICKSCORE_MODEL, processor: str | None = PICKSCORE_PROCESSOR):
        super().__init__()

        try:
            self.model = CLIPModel.from_pretrained(model).eval().requires_grad_(False)
            self.processor = CLIPProcessor.from_pretrained(processor or model)
        except OSError as e:
            raise PriorswapError(
                f"PickScore model {model!r} / processor {processor!r} cannot be loaded ({str(e).splitlines()[0][:150]}); "
                "pass local folders with --pickscore and --pickscore-processor"
            ) from None

    @torch.no_grad()
    def forward(self, images: Tensor, prompts: list[str]) -> Tensor:
        """(B,) raw scores of images (B, 3, H, W) in [0, 1] against their prompts; images go through the processor
        as uint8 pictures, as in the authors' example (PIL images)."""
        device = next(self.model.parameters()).device
        pixels = self.processor(images=[Image.fromarray(a) for a in to_uint8(images)], return_tensors="pt")[
            "pixel_values"
        ]
        text = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        m = self.model
        img = m.visual_projection(m.vision_model(pixel_values=pixels.to(device)).pooler_output)
        txt = m.text_projection(
            m.text_model(
                input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device)
            ).pooler_output
        )
        return m.logit_scale.exp() * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)


def preference(scores: Tensor, reference: Tensor) -> Tensor:
    """P(method preferred over the reference) per sample: softmax over the two scores, the method's share."""
    return torch.sigmoid(scores - reference)
