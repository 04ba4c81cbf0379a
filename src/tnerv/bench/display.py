"""How each method is shown in the bench's tables and figures: a model's card, else an anchor codec's
entry here."""

from __future__ import annotations

from tnerv.models.card import Display
from tnerv.models.registry import model_card

# The anchor codecs (tnerv.anchors) have no model card, so their label, colour and marker are kept here.
ANCHORS = {
    "x265": Display(label="x265 (veryslow)", colour="#000000", marker="*"),
    "x264": Display(label="x264 (veryslow)", colour="#7f7f7f", marker="h"),
    "av1": Display(label="SVT-AV1", colour="#17becf", marker="p"),
}


def display_of(method: str) -> Display | None:
    """A model's or an anchor codec's label, colour and marker; None for any other method (an ablation)."""
    card = model_card(method)
    return card if card is not None else ANCHORS.get(method)
