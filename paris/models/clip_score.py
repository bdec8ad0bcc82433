"""CLIP score (Hessel et al. 2021; torchmetrics' CLIPScore): 100 * max(cos(image, text), 0) per image and its
prompt, averaged. It says how well images match their text, where no classifier knows the classes.

The model, its tokenizer and its image processor load from one local directory, e.g. a download of
openai/clip-vit-large-patch14. Images are quantised to 8 bits as a saved PNG would be, so a score computed
here equals one computed on the image files; CLIP's own preprocessing (resize, centre crop, normalise) follows.
"""

from __future__ import annotations

import torch

from paris.models.encoders import load_local
from paris.errors import ParisError
from paris.images import to_pil


class ClipScore:
    def __init__(self, path: str, batch_size: int = 50, device: str = "cpu"):
        # The PIL image processor: CLIP's original preprocessing, and the default one needs torchvision.
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model = load_local(CLIPModel.from_pretrained, path, "clip", "--clip-model", {"clip"}, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.processor = CLIPImageProcessorPil.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ParisError(f"{path} holds a CLIP model but lacks its tokenizer or image processor "
                             f"({str(e).splitlines()[0]}); download the whole model repository") from None
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def pairs(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """[N] scores of image i ([N, C, H, W] in [-1, 1], C = 1 or 3) with text i."""
        scores = []
        for i in range(0, len(texts), self.batch_size):
            pixels = self.processor([to_pil(x).convert("RGB") for x in images[i : i + self.batch_size]],
                                    return_tensors="pt")["pixel_values"]
            tokens = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            out = self.model(pixel_values=pixels.to(self.device), input_ids=tokens["input_ids"].to(self.device),
                             attention_mask=tokens["attention_mask"].to(self.device))
            cosine = (out.image_embeds * out.text_embeds).sum(-1)  # both embeddings come unit length
            scores.append(100 * cosine.clamp(min=0).float().cpu())
        return torch.cat(scores)

    def __call__(self, images: torch.Tensor, texts: list[str]) -> float:
        """The mean score over the pairs."""
        return self.pairs(images, texts).mean().item()
