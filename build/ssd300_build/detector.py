"""The network as served: uint8 RGB pixels in, each class's best candidates out.

Normalisation, box decoding, the softmax and each class's top 200 live inside the exported graph,
so that the Triton model owns them (one definition, run on the GPU) and the postprocess only
filters and suppresses. NVIDIA's selection never looks past a class's 200 best scores, so ranking
them in the graph loses nothing and shrinks what crosses to the postprocess from 2.93 MB per
image (every anchor's box and score) to 0.32 MB.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .default_boxes import FIG_SIZE, dboxes300_coco, decode_boxes
from .model import SSD300

# ImageNet statistics, as in NVIDIA's COCO evaluation transform (ToTensor, then Normalize);
# the published mAP was measured with these.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_SHAPE = (FIG_SIZE, FIG_SIZE, 3)
# What the network's convolutions compute in; the input stays uint8 and the outputs FP32 in both.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
# Candidates per class handed to the postprocess: NVIDIA's decode keeps at most 200 per class
# after its score filter (reference.CANDIDATES_PER_CLASS); ssd300's configs carry the same dims.
CANDIDATES = 200


def network_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name; unknown names are refused with the valid ones."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}") from None


def half_network(network: SSD300) -> nn.Module:
    """A half-precision copy of ``network`` for GPUs, each batch norm folded into the convolution
    before it (in FP32, then cast). Folding is exact in inference and saves a rounding per layer
    that a half-precision batch norm would add (measured on the calibrated random weights, the
    first sample photo: largest score difference from FP32 0.029 folded, 0.044 not) and a kernel
    per layer on the GPU. NVIDIA's own FP16 path keeps its batch norms in FP32 for the same reason."""
    return fold_batch_norms(network).to(torch.float16)


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (eval mode) whose convolutions carry the batch norms that followed them."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(network).eval())


def fp32_network_of(scripted: torch.jit.ScriptModule) -> nn.Module:
    """The network inside a traced model.pt, in FP32, whichever precision it was built with: an
    FP16 one comes back with its batch norms folded (and its weights' FP16 rounding)."""
    state = {key: value.float() for key, value in scripted.network.state_dict().items()}
    network: nn.Module = SSD300()
    if state.keys() != network.state_dict().keys():
        network = fold_batch_norms(network)
    network.load_state_dict(state)
    return network.eval()


def top_candidates(
    boxes: torch.Tensor, scores: torch.Tensor, k: int = CANDIDATES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's ``k`` highest scores, highest first, and their boxes.

    boxes: Tensor[N, A, 4]; scores: Tensor[N, C, A]. Returns boxes Tensor[N, C, k, 4] and scores
    Tensor[N, C, k]. Equal scores come in anchor order, as in the reference's stable sort: topk
    leaves their order open, so the k winners are put in anchor order, then sorted stably by
    score. Which of several equal scores at the k-th place make the cut stays topk's choice.
    """
    classes = scores.shape[1]
    # A NaN (broken weights) would rank first and take a real candidate's place; -1 never passes
    # the postprocess's score filter.
    scores = torch.where(scores.isnan(), -1.0, scores)
    _, anchors = scores.topk(k, dim=2)
    if torch.onnx.is_in_onnx_export():
        # ONNX has no stable sort, but its TopK puts equal values in index order: the same result.
        anchors = anchors.topk(k, dim=2, largest=False).values
        values, order = scores.gather(2, anchors).topk(k, dim=2)
    else:
        anchors = anchors.sort(dim=2).values
        values, order = scores.gather(2, anchors).sort(dim=2, descending=True, stable=True)
    anchors = anchors.gather(2, order)
    picked = boxes.gather(1, anchors.flatten(1).unsqueeze(2).expand(-1, -1, 4))
    return picked.unflatten(1, (classes, k)), values


class SSD300Detector(nn.Module):
    """``images`` Tensor[N, 300, 300, 3] uint8 RGB → ``(boxes, scores)`` of each class's best
    candidates (:func:`top_candidates`).

    boxes: Tensor[N, 80, 200, 4] float32 ``(x1, y1, x2, y2)`` in [0, 1] of the 300×300 input.
    scores: Tensor[N, 80, 200] float32 softmax probabilities of COCO classes 1..80, highest first
    (the background column is dropped after the softmax over all 81).

    With ``precision="fp16"`` the network runs in half precision (:func:`half_network`) while
    normalisation, box decode, softmax and ranking stay FP32: the input and output contract is
    the same as FP32's, so the postprocess does not change (``network`` itself is left as it is).
    """

    def __init__(self, network: SSD300, precision: str = "fp32") -> None:
        super().__init__()
        self.precision = precision
        dtype = network_dtype(precision)
        self.network = network if dtype == torch.float32 else half_network(network)
        self.register_buffer("dboxes", dboxes300_coco(), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT takes a uint8 input only where it feeds a Cast. Then NHWC -> NCHW,
        # contiguous so the heads' view() sees the standard layout.
        x = images.to(self.mean.dtype).permute(0, 3, 1, 2).contiguous() / 255.0
        return (x - self.mean) / self.std

    def decode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every anchor's box, Tensor[N, 8732, 4], and class probabilities, Tensor[N, 80, 8732]."""
        ploc, plabel = self.network(self.normalize(images).to(network_dtype(self.precision)))
        ploc, plabel = ploc.float(), plabel.float()
        boxes = decode_boxes(ploc, self.dboxes)
        scores = plabel.softmax(dim=1)[:, 1:, :]
        return boxes, scores

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return top_candidates(*self.decode(images))
