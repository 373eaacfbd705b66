"""Jiang et al.: SMSANet, stacked multi-scale attention for automatic colorization; Zhang et al.'s network.

"Stacked multi-scale attention network for image colorization" (Jiang, Xu, Xia, Yang, Huang, Huang)
colorizes from L alone (sec. 2.1: "our model takes in a grayscale image L"). Its BaseNet is the
network of Zhang et al. 2017 ("Real-time user-guided image colorization with learned deep priors")
without the hint input; SMSANet adds attention modules between its feature extraction and its
reconstruction (their Fig. 1), trained with a Huber loss plus a salient loss. Two registered models:

    "jiang"      BaseNet / SMSANet: input (L - 50) / 100                          (B, 1, H, W)
    "zhang2017"  Zhang et al.'s user-guided network: [L; ab hints; hint mask]       (B, 4, H, W)
                 (the reference of notebook 07; no hints = zeros = automatic colorization)

Both share the layout below:

    input                                                             (B, 1 or 4, H, W)
    conv1  2 x conv 3x3, C                 (full res)                 (B, C, H, W)      -> shortcut to conv10
    conv2  2 x conv 3x3, 2C                (1/2)                      (B, 2C, H/2, W/2) -> shortcut to conv9
    conv3  3 x conv 3x3, 4C                (1/4)                      (B, 4C, H/4, W/4) -> shortcut to conv8
    conv4  3 x conv 3x3, 8C                (1/8)                      (B, 8C, H/8, W/8)
    conv5  3 x conv 3x3, 8C, dilation 2    (1/8)   [+ attention]
    conv6  3 x conv 3x3, 8C, dilation 2    (1/8)   [+ attention]
    conv7  3 x conv 3x3, 8C                (1/8)   [+ attention]
    conv8  up (4x4 transposed conv) + shortcut(conv3), 3 x conv, 4C  (1/4)
    conv9  up + shortcut(conv2), 1 x conv, 2C                        (1/2)
    conv10 up + shortcut(conv1), 1 x conv, 2C, LeakyReLU             (full res)
    head   1x1 conv -> tanh * 110 = ab                                (B, 2, H, W)

C = 64 is Zhang et al.'s (widths 64, 128, 256, 512, 512, 512, 512, 256, 128, 128). Downsampling
takes every second pixel after a block, as their network does; batch norm closes every block.

Where the attention goes. The paper's Fig. 1 puts the stacked modules between the feature
extraction and the reconstruction; we stack one after each of conv5, conv6 and conv7 (`attention_after`),
the 1/8-resolution blocks whose dilated receptive fields see the whole image at 256 x 256: there the
spatial scales H/2^k of eq. 1 still span several cells, and the modules act on the most semantic
features before the decoder starts to paint. `attention` picks SMSA (eq. 1-4), CBAM or SE (the
paper's Table 2 ablation), or None (BaseNet).

Loss (sec. 2.3):
    L_huber = mean Huber_delta=1(ab_pred - ab_true)                        (eq. 5, ab in Lab units)
    L_sal   = mean |phi(x) ab_true - phi(y) ab_pred|                       (eq. 6)
    L_total = L_huber + alpha L_sal,  alpha = 1                            (eq. 7)
phi is a binary foreground map from a saliency detector: PFANet from a local file when given,
otherwise frequency-tuned saliency in Lab (colorkit.saliency; it reads color, so phi(x) and phi(y)
differ where the prediction gets an object's color wrong), computed on the true and on the predicted
RGB images (without gradient: the detector is frozen, the map only weighs the pixels).

Hints, for "zhang2017" only, as Zhang et al. train (sec. 3.2 of their paper): every training image gets a geometric
number of hints (P(K = k) = (1 - p)^k p, p = 1/8, so about one image in eight gets none and is
colorized automatically), each a small square carrying its mean true ab. Zhang et al. draw the
positions from a Gaussian around the centre; we draw them uniformly, so training sees the same
kind of hints as the hint curves of notebook 07.

Zhang et al.'s released weights (their PyTorch port's `siggraph17-df00044c.pth`, width 64) load from
a local file with `load_zhang_weights`: every layer maps one to one onto this layout, the attention
modules keep their initialization, the classification head is dropped, and the automatic BaseNet
takes the L column of conv1's first kernel: with no hints, the ab and mask inputs are zeros, so this
is exactly Zhang et al.'s network run without hints (the row of Jiang et al.'s Table 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.color import lab_to_rgb
from colorkit.data import geometric_hint_counts, sample_hints
from colorkit.models import HINT_PRIORS, Colorizer, global_hint, hint_inputs, hint_prior, pad_to_multiple, register

__all__ = ["BaseNet", "UserGuidedNet", "huber_loss", "salient_loss", "make_smsanet_step", "load_zhang_weights",
           "ATTENTIONS", "AB_SCALE", "HINT_P"]

AB_SCALE = 110.0
HINT_P = 1 / 8                     # Zhang et al.: geometric number of hints, p = 1/8
ATTENTIONS = (None, "smsa", "cbam", "se")


def _block(c_in: int, c_out: int, n: int, dilation: int = 1) -> nn.Sequential:
    """n x (3x3 conv + ReLU), then batch norm (Zhang et al.'s block)."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
    layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


def _attention_module(kind: str, channels: int, scales: int) -> nn.Module:
    from colorkit.attention import CBAM, SMSA, SqueezeExcitation

    reduction = min(16, max(1, channels // 4))
    if kind == "smsa":
        return SMSA(channels, scales=scales, reduction=reduction)
    if kind == "cbam":
        return CBAM(channels, reduction=reduction)
    return SqueezeExcitation(channels, reduction=reduction)


@register("jiang")
class BaseNet(Colorizer):
    """Jiang et al.'s BaseNet (Zhang et al.'s network on L alone), with optional attention after
    conv5-7 (SMSANet when "smsa"). Automatic: forward(L) -> ab (B, 2, H, W).
    Any H, W (padded by edge replication to a multiple of 8, cropped back).
    """

    takes_hints = False

    def __init__(self, width: int = 64, image_size: int = 64, attention: str | None = None,
                 attention_after: Sequence[int] = [5, 6, 7], scales: int = 3):   # a list: configs are JSON
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"jiang: attention must be one of {ATTENTIONS}, got {attention!r}")
        if not set(attention_after) <= {4, 5, 6, 7}:
            raise ValueError(f"jiang: attention_after lists blocks among 4-7 (the 1/8-resolution ones), got {attention_after}")
        self.image_size, self.attention_kind = image_size, attention
        self.attention_after = tuple(sorted(attention_after)) if attention else ()
        c = width
        self.conv1 = _block(4 if self.takes_hints else 1, c, 2)
        self.conv2 = _block(c, 2 * c, 2)
        self.conv3 = _block(2 * c, 4 * c, 3)
        self.conv4 = _block(4 * c, 8 * c, 3)
        self.conv5 = _block(8 * c, 8 * c, 3, dilation=2)
        self.conv6 = _block(8 * c, 8 * c, 3, dilation=2)
        self.conv7 = _block(8 * c, 8 * c, 3)
        self.attention = nn.ModuleDict({str(i): _attention_module(attention, 8 * c, scales) for i in self.attention_after})
        self.up8, self.short3 = nn.ConvTranspose2d(8 * c, 4 * c, 4, stride=2, padding=1), nn.Conv2d(4 * c, 4 * c, 3, padding=1)
        self.conv8 = nn.Sequential(nn.ReLU(inplace=True), _block(4 * c, 4 * c, 2))
        self.up9, self.short2 = nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1), nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.conv9 = nn.Sequential(nn.ReLU(inplace=True), _block(2 * c, 2 * c, 1))
        self.up10, self.short1 = nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.Conv2d(c, 2 * c, 3, padding=1)
        self.conv10 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2))
        self.head = nn.Conv2d(2 * c, 2, 1)

    def _inputs(self, L: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None) -> Tensor:
        if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"jiang: L must be shaped (B, 1, H, W), got {tuple(L.shape) if isinstance(L, Tensor) else L!r}")
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("jiang: BaseNet / SMSANet colorize from L alone and take no hints; "
                             "Zhang et al.'s user-guided network is the model 'zhang2017'")
        return (L - 50.0) / 100.0                                         # (B, 1, H, W)

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
                return_maps: bool = False):
        """ab (B, 2, H, W); with `return_maps`, also {block: the attention module's maps} (SMSA only)."""
        h, w = L.shape[-2:]
        inputs = self._inputs(L, hint_ab, hint_mask)                      # (B, 1 or 4, H, W)
        x = pad_to_multiple(inputs, 8)                                    # (B, 1 or 4, H', W')
        conv1 = self.conv1(x)                                             # (B, C, H, W)
        conv2 = self.conv2(conv1[..., ::2, ::2])                          # (B, 2C, H/2, W/2)
        conv3 = self.conv3(conv2[..., ::2, ::2])                          # (B, 4C, H/4, W/4)
        y = self.conv4(conv3[..., ::2, ::2])                              # (B, 8C, H/8, W/8)
        y = self._global(y, inputs)                                       # + global hints (zhang2017 option)
        maps = {}
        for i, block in ((5, self.conv5), (6, self.conv6), (7, self.conv7)):
            if 4 in self.attention_after and i == 5:
                y = self._attend(4, y, maps, return_maps)
            y = self._attend(i, block(y), maps, return_maps)                # (B, 8C, H/8, W/8)
        y = self.conv8(self.up8(y) + self.short3(conv3))                  # (B, 4C, H/4, W/4)
        y = self.conv9(self.up9(y) + self.short2(conv2))                  # (B, 2C, H/2, W/2)
        y = self.conv10(self.up10(y) + self.short1(conv1))                # (B, 2C, H, W)
        ab = torch.tanh(self.head(y))[..., :h, :w] * AB_SCALE             # (B, 2, H, W)
        ab = self._add_prior(ab, inputs)
        return (ab, maps) if return_maps else ab

    def _global(self, y: Tensor, inputs: Tensor) -> Tensor:
        return y                                                          # BaseNet takes no hints

    def _add_prior(self, ab: Tensor, inputs: Tensor) -> Tensor:
        return ab

    def _attend(self, block: int, y: Tensor, maps: dict, return_maps: bool) -> Tensor:
        key = str(block)
        if key not in self.attention:
            return y
        module = self.attention[key]
        if return_maps and self.attention_kind == "smsa":
            y, maps[block] = module(y, return_maps=True)
            return y
        return module(y)


@register("zhang2017")
class UserGuidedNet(BaseNet):
    """Zhang et al. 2017's user-guided network: BaseNet's layout on [L; ab hints; hint mask].

    forward(L, *, hint_ab=None, hint_mask=None) -> ab (B, 2, H, W); no hints = automatic colorization.
    Attention slots work as in BaseNet (None by default: Zhang et al.'s network has none).
    The course's options (issue 15; both off by default, Zhang et al.'s network): `global_hints`, a
    global-hints branch fed with the mean hint color; `prior` ("mean" or "spread", `models.hint_prior`),
    a classical guess from the hints that the input also carries (2 more channels) and the output
    adds to ab, so the network learns a correction (its head starts at zero).
    """

    takes_hints = True

    def __init__(self, width: int = 64, image_size: int = 64, attention: str | None = None,
                 attention_after: Sequence[int] = [5, 6, 7], scales: int = 3, global_hints: bool = False,
                 prior: str | None = None):
        super().__init__(width, image_size, attention, attention_after, scales)
        if prior not in HINT_PRIORS:
            raise ValueError(f"zhang2017: prior must be one of {HINT_PRIORS}, got {prior!r}")
        self.prior = prior                                                # ours: ab = prior + the network's
        if prior is not None:
            self.conv1[0] = nn.Conv2d(6, width, 3, padding=1)             # it also reads the prior it corrects
            nn.init.zeros_(self.head.weight)                              # an untrained model returns its prior
            nn.init.zeros_(self.head.bias)
        c = self.conv4[-1].num_features                                   # 8C, conv4's width
        # Zhang et al.'s global hints network: 1 x 1 convs on global color statistics, spatially
        # replicated and added to the main network's features. Theirs reads a color histogram or a
        # saturation the user gives; ours reads the mean of the local hints and a has-hints flag
        # (`models.global_hint`), so the clicks alone drive it. Its last conv starts at zero.
        self.global_net = None
        if global_hints:
            self.global_net = nn.Sequential(nn.Conv2d(3, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1))
            nn.init.zeros_(self.global_net[-1].weight)
            nn.init.zeros_(self.global_net[-1].bias)

    def _inputs(self, L: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None) -> Tensor:
        x0 = hint_inputs(L, hint_ab, hint_mask, model="zhang2017")              # (B, 4, H, W)
        if self.prior is None:
            return x0
        return torch.cat([x0, hint_prior(self.prior, x0) / AB_SCALE], dim=1)    # + the prior: (B, 6, H, W)

    def _global(self, y: Tensor, inputs: Tensor) -> Tensor:
        if self.global_net is None:
            return y
        return y + self.global_net(global_hint(inputs))                  # (B, 8C, 1, 1) broadcast: (B, 8C, H/8, W/8)

    def _add_prior(self, ab: Tensor, inputs: Tensor) -> Tensor:
        if self.prior is None:
            return ab
        return (inputs[:, 4:6] * AB_SCALE + ab).clamp(-AB_SCALE, AB_SCALE)       # the prior (an input too) + ab


def legacy_config(config: dict, state: dict) -> dict:
    """A checkpoint saved before SMSANet became automatic: "jiang" with a 4-channel conv1 is Zhang
    et al.'s user-guided network, so it is rebuilt as "zhang2017" (its weights fit unchanged)."""
    weight = state.get("conv1.0.weight")
    if config.get("name") == "jiang" and isinstance(weight, Tensor) and weight.dim() == 4 and weight.shape[1] == 4:
        return {**config, "name": "zhang2017"}
    return config


# ---------------------------------------------------------------------------------------------
# Zhang et al.'s released weights
# ---------------------------------------------------------------------------------------------

def _zhang_key_map(model: BaseNet) -> dict[str, str]:
    """{key in Zhang et al.'s state dict: key in ours}. Their blocks model1-7 hold the same
    [conv, ReLU]* + BN sequence as our conv1-7; model8-9 start with a ReLU (ours: ReLU + block);
    model10 is ReLU, conv, LeakyReLU like ours; model_out's 1x1 conv is our head."""
    ours = model.state_dict()
    mapping: dict[str, str] = {}
    for key in ours:
        top, rest = key.split(".", 1)
        if top.startswith("conv") and top[4:] in "1234567" and len(top) == 5:
            mapping[f"model{top[4:]}.{rest}"] = key
        elif top in ("conv8", "conv9") and rest.startswith("1."):        # ReLU, then the block
            index, tail = rest[2:].split(".", 1)
            mapping[f"model{top[4:]}.{int(index) + 1}.{tail}"] = key
        elif top == "conv10":
            mapping[f"model10.{rest}"] = key
        else:
            theirs = {"up8": "model8up.0", "short3": "model3short8.0", "up9": "model9up.0", "short2": "model2short9.0",
                      "up10": "model10up.0", "short1": "model1short10.0", "head": "model_out.0"}.get(top)
            if theirs:
                mapping[f"{theirs}.{rest}"] = key
    return mapping


def load_zhang_weights(model: BaseNet, path: str | os.PathLike) -> BaseNet:
    """Load Zhang et al.'s released network (a PyTorch state dict, e.g. `siggraph17-df00044c.pth`) from
    a local file into `model` (BaseNet, SMSANet or UserGuidedNet of the same width); in place.

    Every layer of ours except the attention modules must be in the file with the same shape; an
    automatic model takes conv1's L column (see the module docstring). Nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Zhang et al.'s weights: no file {str(path)!r} (their siggraph17 .pth, downloaded by you)")
    from colorkit.pretrained import read_state_dict

    state = read_state_dict(path, "Zhang et al.'s weights")
    ours = model.state_dict()
    loaded: dict[str, Tensor] = {}
    for theirs, key in _zhang_key_map(model).items():
        if theirs not in state and key.endswith("num_batches_tracked"):
            continue                                  # a counter some exports leave out; unused in eval
        if theirs not in state:
            raise ValueError(f"Zhang et al.'s weights: {str(path)!r} has no {theirs!r} (for our {key!r}); "
                             "is it their siggraph17 network?")
        value = state[theirs]
        if key == "conv1.0.weight" and not model.takes_hints and value.dim() == 4 and value.shape[1] == 4:
            value = value[:, :1]                      # the L column: hints and mask are zeros without hints
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ValueError(f"Zhang et al.'s weights: {theirs!r} in {str(path)!r} is {tuple(value.shape)}, our {key!r} "
                             f"is {tuple(ours[key].shape)} (their network has width 64: build the model with width=64)")
        loaded[key] = value.to(ours[key].dtype)
    missing = [k for k in ours if k not in loaded and not k.startswith("attention.") and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"Zhang et al.'s weights: nothing in {str(path)!r} for our {missing[:3]}")
    model.load_state_dict(loaded, strict=False)
    return model


# ---------------------------------------------------------------------------------------------
# Losses (eq. 5-7) and the training step
# ---------------------------------------------------------------------------------------------

def huber_loss(pred_ab: Tensor, true_ab: Tensor, delta: float = 1.0) -> Tensor:
    """Eq. 5: 1/2 d^2 where |d| < delta, else delta (|d| - delta / 2), averaged over C, H, W (and B)."""
    return F.huber_loss(pred_ab, true_ab, delta=delta)


def salient_loss(pred_ab: Tensor, true_ab: Tensor, pred_foreground: Tensor, true_foreground: Tensor) -> Tensor:
    """Eq. 6: mean |phi(x) x - phi(y) y| with x the true and y the predicted ab, phi binary maps (B, 1, H, W)."""
    return (true_foreground * true_ab - pred_foreground * pred_ab).abs().mean()


def make_smsanet_step(saliency=None, *, alpha: float = 1.0, hint_p: float = HINT_P, max_hints: int = 50,
                      hint_patch: int = 2, max_patch: int | None = None, dense_share: float = 0.0,
                      dense_hints: tuple[int, int] = (50, 400)):
    """The training step: predict, L_huber + alpha L_sal (alpha = 0: Huber only). A model that takes
    hints (Zhang et al.'s "zhang2017") gets a geometric number of hints per image (p = `hint_p`, at
    most `max_hints`); BaseNet and SMSANet ("jiang") see L alone.

    Hint recipes to compare (`benchmarks/hint_ablation.py`): `max_patch` draws each batch's patch
    side uniformly from 1..max_patch (Zhang et al.: 1-9) instead of `hint_patch`; `dense_share` of
    the images instead get a uniform number of hints in `dense_hints` (a dense reveal).

    `saliency`: rgb (B, 3, H, W) -> binary foreground map (B, 1, H, W) (colorkit.saliency); None
    builds the default detector (`saliency.saliency_source()`: frequency-tuned in Lab) on first use.
    Hints are drawn from the engine's seeded torch RNG, so a resumed run draws the same hints.
    """

    state: dict[str, Any] = {"saliency": saliency}

    def step(ctx, batch) -> dict[str, Tensor]:
        L, ab = batch["L"], batch["ab"]                                   # (B, 1, H, W), (B, 2, H, W)
        model = ctx.models["model"]
        if model.takes_hints:
            counts = geometric_hint_counts(L.shape[0], p=hint_p, max_hints=max_hints)    # the engine-seeded torch RNG
            if dense_share:
                dense = torch.rand(L.shape[0]) < dense_share
                counts = torch.where(dense, torch.randint(dense_hints[0], dense_hints[1] + 1, (L.shape[0],)), counts)
            patch = int(torch.randint(1, max_patch + 1, ())) if max_patch else hint_patch
            hints = sample_hints(ab, counts.tolist(), patch=patch)
            pred = model(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
        else:
            pred = model(L)                                               # automatic: L alone
        loss_huber = huber_loss(pred, ab)                                 # eq. 5
        losses = {"loss_huber": loss_huber}
        loss = loss_huber
        if alpha:
            if state["saliency"] is None:
                from colorkit.saliency import saliency_source
                state["saliency"] = saliency_source()
            with torch.no_grad():
                phi_true = state["saliency"](batch["rgb"].float())                                # (B, 1, H, W)
                phi_pred = state["saliency"](lab_to_rgb(torch.cat([L, pred.detach().float()], 1)))
            loss_sal = salient_loss(pred, ab, phi_pred, phi_true)         # eq. 6
            loss = loss_huber + alpha * loss_sal                          # eq. 7
            losses["loss_sal"] = loss_sal
        ctx.update("model", loss, name="loss")
        return {"loss": loss, **losses}

    return step


BaseNet.training_step = staticmethod(make_smsanet_step(alpha=1.0))
UserGuidedNet.training_step = staticmethod(make_smsanet_step(alpha=0.0))      # Zhang et al.: Huber alone
