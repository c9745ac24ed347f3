"""Tiny randomly initialised Segment Anything models, saved as ``save_pretrained`` saves the
published ones, so that the tests load them through slidelabel's loader as they would real
weights: SAM (``SamModel``) and SAM-HQ (``SamHQModel``), a 2-block ViT of width 32 at 256 px input,
patch 16; SAM 2 (``Sam2Model``), a 5-block Hiera of widths 8 to 64 at 256 px input. Each model's
low-resolution masks are 64 x 64 cells of 4 px, as the published models' are 256 x 256 of 4 px.

    python tests/web/tiny_sam.py FOLDER [sam|sam_hq|sam2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: The tiny models' input side (px) and low-resolution mask side (cells of 4 px, as SAM's).
INPUT_PX = 256
MASK_PX = 64


def _sam_processor(folder: Path, processor_class: type) -> None:
    """Saves ``processor_class`` (SamProcessor, SamHQProcessor) of the tiny input into ``folder``."""
    from transformers import SamImageProcessorPil

    image_processor = SamImageProcessorPil(
        size={"longest_edge": INPUT_PX}, pad_size={"height": INPUT_PX, "width": INPUT_PX},
        mask_size={"longest_edge": MASK_PX}, mask_pad_size={"height": MASK_PX, "width": MASK_PX})
    processor_class(image_processor=image_processor).save_pretrained(folder)


def _vit_kwargs() -> dict:
    """The tiny ViT of SAM and SAM-HQ (their vision configs take the same arguments)."""
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=INPUT_PX, patch_size=16,
                output_channels=32, window_size=4, global_attn_indexes=(1,), num_pos_feats=16, mlp_dim=64,
                initializer_range=0.02)


def save_tiny_sam(folder: Path, *, seed: int = 0) -> Path:
    """Writes a tiny ``SamModel`` and its ``SamProcessor`` into ``folder``; returns it."""
    import torch
    from transformers import (SamConfig, SamMaskDecoderConfig, SamModel, SamProcessor, SamPromptEncoderConfig,
                              SamVisionConfig)

    torch.manual_seed(seed)
    config = SamConfig(vision_config=SamVisionConfig(**_vit_kwargs()).to_dict(),
                       prompt_encoder_config=SamPromptEncoderConfig(hidden_size=32, image_size=INPUT_PX,
                                                                    patch_size=16).to_dict(),
                       mask_decoder_config=SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                                                iou_head_hidden_dim=32).to_dict())
    SamModel(config).eval().save_pretrained(folder)
    _sam_processor(folder, SamProcessor)
    return Path(folder)


def save_tiny_sam_hq(folder: Path, *, seed: int = 0) -> Path:
    """Writes a tiny ``SamHQModel`` and its ``SamHQProcessor`` into ``folder``; returns it."""
    import torch
    from transformers import (SamHQConfig, SamHQMaskDecoderConfig, SamHQModel, SamHQProcessor,
                              SamHQPromptEncoderConfig, SamHQVisionConfig)

    torch.manual_seed(seed)
    config = SamHQConfig(vision_config=SamHQVisionConfig(**_vit_kwargs()).to_dict(),
                         prompt_encoder_config=SamHQPromptEncoderConfig(hidden_size=32, image_size=INPUT_PX,
                                                                        patch_size=16).to_dict(),
                         mask_decoder_config=SamHQMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                                                    iou_head_hidden_dim=32, vit_dim=32).to_dict())
    SamHQModel(config).eval().save_pretrained(folder)
    _sam_processor(folder, SamHQProcessor)
    return Path(folder)


def save_tiny_sam2(folder: Path, *, seed: int = 0) -> Path:
    """Writes a tiny ``Sam2Model`` into ``folder`` with the image processor's config of the published
    SAM 2 repositories, resized to :data:`INPUT_PX` (transformers' ``Sam2ImageProcessor`` needs
    torchvision to be built, which slidelabel does not install; slidelabel reads this file itself);
    returns ``folder``."""
    import torch
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model, Sam2PromptEncoderConfig
    from transformers import Sam2VisionConfig

    torch.manual_seed(seed)
    hiera = Sam2HieraDetConfig(hidden_size=8, image_size=[INPUT_PX, INPUT_PX], blocks_per_stage=[1, 1, 2, 1],
                               embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
                               window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                               window_positional_embedding_background_size=[4, 4])
    side = INPUT_PX // 4  # the Hiera's first stage: patches of 4 px
    vision = Sam2VisionConfig(backbone_config=hiera.to_dict(), backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]],
                              fpn_hidden_size=32)
    config = Sam2Config(vision_config=vision.to_dict(),
                        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=INPUT_PX,
                                                                      patch_size=16).to_dict(),
                        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                                                  iou_head_hidden_dim=32).to_dict())
    Sam2Model(config).eval().save_pretrained(folder)
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam2ImageProcessor", "processor_class": "Sam2Processor", "do_resize": True,
        "size": {"height": INPUT_PX, "width": INPUT_PX}, "mask_size": {"height": MASK_PX, "width": MASK_PX},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True}, indent=2))
    return Path(folder)


#: The builders by ``config.json`` ``model_type``.
BUILDERS = {"sam": save_tiny_sam, "sam_hq": save_tiny_sam_hq, "sam2": save_tiny_sam2}

if __name__ == "__main__":
    print(BUILDERS[sys.argv[2] if len(sys.argv) > 2 else "sam"](Path(sys.argv[1])))
