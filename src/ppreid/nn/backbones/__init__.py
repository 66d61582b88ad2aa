"""Backbones: nn.Modules with an int `out_dim`; forward (B,3,H,W) -> map (B,out_dim,h,w) or vector (B,out_dim).

One file per family (resnet, tiny_cnn, clip_visual), chosen by `conf/backbone/*.yaml` `_target_`;
pretrained weights are opt-in through `pretrained.load_pretrained`. Nothing is imported here so that
choosing the tiny CNN does not pay for importing open_clip.
"""
