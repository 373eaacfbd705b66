"""The "without attention" baseline: a plain encoder-decoder CNN from L to ab, trained with MSE.

Every paper notebook compares its attention model against this one. It is the regression
baseline of Lakhani (sec. 3.4, after Baldassarre et al. 2017): strided 3x3 convolutions with
batch norm encode L, upsampling convolutions decode to ab, no fusion and no attention. Trained with
MSE on ab it predicts the conditional mean, whose brownish desaturation notebook 02 explains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.models import Colorizer, pad_to_multiple, register

AB_SCALE = 110.0  # ab is predicted as tanh(.) * AB_SCALE, covering the whole sRGB gamut (|a|, |b| < 110)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register("baseline")
class BaselineCNN(Colorizer):
    """L (B, 1, H, W) -> ab (B, 2, H, W): `depth` stride-2 stages down, as many up, width doubling.

    Any H, W work: the input is padded by reflection to a multiple of 2^depth and the output cropped.
    """

    def __init__(self, width: int = 32, depth: int = 3, image_size: int = 64):
        super().__init__()
        self.depth, self.image_size = depth, image_size
        widths = [width * 2**i for i in range(depth + 1)]                  # e.g. 32, 64, 128, 256
        self.stem = conv_bn_relu(1, widths[0])
        self.down = nn.ModuleList(nn.Sequential(conv_bn_relu(widths[i], widths[i + 1], stride=2),
                                                conv_bn_relu(widths[i + 1], widths[i + 1]))
                                  for i in range(depth))
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
        for stage in self.up:
            x = stage(F.interpolate(x, scale_factor=2.0, mode="nearest"))   # (B, C/2, 2H, 2W) each
        ab = torch.tanh(self.head(x)) * AB_SCALE                            # (B, 2, H', W')
        return ab[..., :h, :w]


def mse_step(ctx, batch) -> dict[str, Tensor]:
    """One training step: MSE between predicted and true ab, in units of AB_SCALE."""
    pred = ctx.models["model"](batch["L"])
    loss = F.mse_loss(pred / AB_SCALE, batch["ab"] / AB_SCALE)
    ctx.update("model", loss)
    return {"loss": loss}


BaselineCNN.training_step = staticmethod(mse_step)
