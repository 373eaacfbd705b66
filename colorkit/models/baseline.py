"""The course baseline: an encoder-decoder CNN from L to ab without attention, trained with MSE.

Notebooks 00, 03 and 04 train it and compare the papers' models with it. It is the course's own
network, not any paper's: strided 3x3 convolutions with batch norm encode L, upsampling
convolutions decode to ab, no attention. (Lakhani's baseline of sec. 3.4, the same encoder-decoder
as her final model without fusion, is `lakhani` with fusion=False, in notebook 05.) Trained with
MSE on ab it predicts the conditional mean, whose brownish desaturation notebook 02 explains.

With `features="efficientnet-lite0"` (the course preset) the encoder also reads a frozen ImageNet
network on the gray image: its feature maps at several depths (a hypercolumn, as in Larsson et al.
2016, "Learning Representations for Automatic Colorization"), resized to the bottleneck, projected
by a 1x1 convolution and concatenated to the CNN's own bottleneck. A few hundred photos cannot teach
a small CNN what grass or sky is; a network that has seen ImageNet already knows. Still no attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.models import Colorizer, pad_to_multiple, register

AB_SCALE = 110.0  # ab is predicted as tanh(.) * AB_SCALE, covering the whole sRGB gamut (|a|, |b| < 110)
# EfficientNet-Lite0's stages at 1/4, 1/8, 1/16 and 1/32 of its input: edges to object parts
HYPERCOLUMN_LAYERS = ("stage2", "stage3", "stage5", "stage6")


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register("baseline")
class BaselineCNN(Colorizer):
    """L (B, 1, H, W) -> ab (B, 2, H, W): `depth` stride-2 stages down, as many up, width doubling.

    Any H, W work: the input is padded by reflection to a multiple of 2^depth and the output cropped.
    `features`: None (a CNN from scratch) or a network of `colorkit.pretrained`, run frozen on the
    gray image resized to `feature_size` square, its `feature_layers` (None: HYPERCOLUMN_LAYERS, for
    EfficientNet-Lite0) fused at the bottleneck through `fuse_width` channels. Its weights are in
    the state dict, so a checkpoint is self-contained.
    """

    def __init__(self, width: int = 32, depth: int = 3, image_size: int = 64, features: str | None = None,
                 feature_layers: Sequence[str] | None = None, feature_size: int = 128, fuse_width: int = 64):
        super().__init__()
        self.depth, self.image_size = depth, image_size
        widths = [width * 2**i for i in range(depth + 1)]                  # e.g. 32, 64, 128, 256
        self.stem = conv_bn_relu(1, widths[0])
        self.down = nn.ModuleList(nn.Sequential(conv_bn_relu(widths[i], widths[i + 1], stride=2),
                                                conv_bn_relu(widths[i + 1], widths[i + 1]))
                                  for i in range(depth))
        self.features = None
        if features is not None:
            from colorkit import pretrained

            self.feature_layers = tuple(feature_layers) if feature_layers is not None else HYPERCOLUMN_LAYERS
            self.features = pretrained.features(features, layers=self.feature_layers, size=feature_size)
            self.project = nn.Sequential(nn.Conv2d(sum(self.features.dims.values()), fuse_width, 1, bias=False),
                                         nn.BatchNorm2d(fuse_width), nn.ReLU(inplace=True))
            self.merge = conv_bn_relu(widths[-1] + fuse_width, widths[-1])
        self.up = nn.ModuleList(conv_bn_relu(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None) -> Tensor:
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("the baseline CNN takes no hints")
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"L must be shaped (B, 1, H, W), got {tuple(L.shape)}")
        h, w = L.shape[-2:]
        x = pad_to_multiple(L / 50.0 - 1.0, 2**self.depth)                  # L in [0, 100] -> [-1, 1]
        x = self.stem(x)                                                    # (B, C, H, W)
        for stage in self.down:
            x = stage(x)                                                    # (B, 2C, H/2, W/2) each
        if self.features is not None:                                       # the hypercolumn, fused at (H/2^d, W/2^d)
            x = self.merge(torch.cat([x, self.project(self.hypercolumn(L, x.shape[-2:]))], 1))
        for stage in self.up:
            x = stage(F.interpolate(x, scale_factor=2.0, mode="nearest"))   # (B, C/2, 2H, 2W) each
        ab = torch.tanh(self.head(x)) * AB_SCALE                            # (B, 2, H', W')
        return ab[..., :h, :w]

    def hypercolumn(self, L: Tensor, size: tuple[int, int]) -> Tensor:
        """The frozen network's `feature_layers` on the gray image, each resized to `size`: (B, sum of dims, *size)."""
        from colorkit.color import lightness_to_gray

        with torch.no_grad():                                               # frozen: no graph through it
            maps = self.features(lightness_to_gray(L.float()))             # {layer: (B, C_l, h_l, w_l)}
        return torch.cat([F.interpolate(maps[n], size=tuple(size), mode="bilinear", align_corners=False)
                          for n in self.feature_layers], 1)


def mse_step(ctx, batch) -> dict[str, Tensor]:
    """One training step: MSE between predicted and true ab, in units of AB_SCALE."""
    pred = ctx.models["model"](batch["L"])
    loss = F.mse_loss(pred / AB_SCALE, batch["ab"] / AB_SCALE)
    ctx.update("model", loss)
    return {"loss": loss}


BaselineCNN.training_step = staticmethod(mse_step)
