"""A tiny randomly initialised Segment Anything model (the ``SamModel`` architecture, a 2-block
ViT of width 32 at 256 px input, patch 16) with its processor, saved as ``save_pretrained`` saves
the published ones: the tests load it through slidelabel's loader as they would real weights.

    python tests/web/tiny_sam.py FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The tiny model's input side (px) and low-resolution mask side (cells of 4 px, as SAM's).
INPUT_PX = 256
MASK_PX = 64


def save_tiny_sam(folder: Path, *, seed: int = 0) -> Path:
    """Writes the tiny model and its processor into ``folder``; returns it."""
    import torch
    from transformers import (SamConfig, SamImageProcessorPil, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)

    torch.manual_seed(seed)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=INPUT_PX,
                             patch_size=16, output_channels=32, window_size=4, global_attn_indexes=(1,),
                             num_pos_feats=16, mlp_dim=64, initializer_range=0.02)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=INPUT_PX, patch_size=16)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    SamModel(config).eval().save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": INPUT_PX}, pad_size={"height": INPUT_PX, "width": INPUT_PX},
        mask_size={"longest_edge": MASK_PX}, mask_pad_size={"height": MASK_PX, "width": MASK_PX})).save_pretrained(folder)
    return Path(folder)


if __name__ == "__main__":
    print(save_tiny_sam(Path(sys.argv[1])))
