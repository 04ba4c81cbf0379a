"""How each method is shown in the bench's tables and figures: a model's card, else an anchor codec's
entry here."""

from __future__ import annotations

from tnerv.anchors import anchor_label
from tnerv.models.card import Display
from tnerv.models.registry import model_card

# The anchor codecs (tnerv.anchors) have no model card, so their colour and marker are kept here; their
# label names the preset and prediction structure the benches run them with (wherever a BD-rate is shown).
ANCHORS = {
    "x265": Display(label=anchor_label("x265"), colour="#000000", marker="*"),
    "x264": Display(label=anchor_label("x264"), colour="#7f7f7f", marker="h"),
    "av1": Display(label=anchor_label("av1"), colour="#17becf", marker="p"),
}


def display_of(method: str) -> Display | None:
    """A model's or an anchor codec's label, colour and marker; None for any other method (an ablation)."""
    card = model_card(method)
    return card if card is not None else ANCHORS.get(method)
