"""The paper's metrics (docs/paper.md §3), from a total negative log-likelihood in nats and a count.

- music: NLL per frame = total NLL over all frames of the split / number of frames
  (not a mean of per-piece means);
- characters: bits per character = mean NLL per symbol / ln 2;
- words: perplexity = exp(mean NLL per token).
"""

from __future__ import annotations

import math
from sys import float_info

from deeprnn.names import METRICS


def metric_name(kind: str, level: str) -> str:
    """The metric the paper reports for a corpus: music -> nll, characters -> bpc, words -> ppl."""
    if kind == "music":
        return "nll"
    return "bpc" if level == "char" else "ppl"


def from_nll(metric: str, total_nll: float, count: int) -> float:
    if count <= 0:
        raise ValueError("a metric needs at least one scored frame or token")
    mean = total_nll / count
    if metric == "nll":
        return mean
    if metric == "bpc":
        return mean / math.log(2)
    if metric == "ppl":  # past e^709 (a diverged model's), inf: no finite score, not a crash
        return math.inf if mean > math.log(float_info.max) else math.exp(mean)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
