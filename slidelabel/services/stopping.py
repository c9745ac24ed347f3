"""When more labels are buying little: the plain sentence each epoch gives a labeller.

Two signals, both measured without a test set: the share of superpixels whose predicted category
changed since the previous epoch (a model that no longer moves is not learning from the new
labels), and the estimated accuracy from out-of-fold predictions, with its interval. The
plateau is called when fewer than :data:`PLATEAU_CHANGE` of the predictions changed.
"""

from __future__ import annotations

#: Share of changed predictions below which more labels are said to buy little.
PLATEAU_CHANGE = 0.01


def stopping_signal(new_labels: int | None, changed_fraction: float | None, estimated: dict | None) -> dict:
    """``{"sentence", "plateau"}`` for an epoch trained on ``new_labels`` more labels than the
    previous one (None for the first epoch), whose predictions changed by ``changed_fraction``
    (0-1; None when there is nothing to compare), with the ``estimated`` accuracy
    (:func:`~slidelabel.pipelines.calibration.accuracy_interval`, or None).

    Examples
    --------
    >>> stopping_signal(50, 0.004, {"value": 0.91, "low": 0.89, "high": 0.93, "n": 400})["sentence"]
    'The last 50 labels changed 0.4% of predictions; estimated accuracy 0.91 ± 0.02. More labels are buying little: check the predictions on the slides, label where they are wrong, or stop here.'
    """
    parts = []
    if changed_fraction is not None and new_labels is not None:
        parts.append(f"The last {new_labels} labels changed {100 * changed_fraction:.1f}% of predictions")
    if estimated and estimated.get("value") is not None:
        half = (estimated["high"] - estimated["low"]) / 2
        parts.append(f"estimated accuracy {estimated['value']:.2f} ± {half:.2f}")
    plateau = bool(changed_fraction is not None and new_labels and changed_fraction < PLATEAU_CHANGE)
    if not parts:
        return {"sentence": "First epoch: label the cards the guided view shows, then train again to see how "
                            "much the predictions move.", "plateau": False}
    sentence = "; ".join(parts) + "."
    sentence = sentence[0].upper() + sentence[1:]
    if plateau:
        sentence += " More labels are buying little: check the predictions on the slides, label where they are wrong, or stop here."
    return {"sentence": sentence, "plateau": plateau}
