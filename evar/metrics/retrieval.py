"""Audio↔text retrieval metrics as EVAR's ``retr_a2t_t2a.py`` reports them (WavCaps' ``a2t``/``t2a``).

Inputs: the cosine similarities ``(n_audio, n_captions)`` and each caption's audio (``owner``). A rank is 0-based:
the number of candidates scored strictly higher than the one sought (a tie counts in the query's favour).

- audio→text: a clip's rank is that of its best-ranked caption; R@k = share of clips with rank < k; AP@10 sums
  ``i / position_i`` over its captions found in the top 10 (1-based positions, in order) and divides by its number
  of captions (WavCaps divides by 5, the captions per Clotho or AudioCaps test clip).
- text→audio: each caption ranks the clips; R@k as above; mAP@10 is the mean of ``1 / (rank + 1)`` over captions
  whose clip is in the top 10 (0 otherwise), WavCaps' formula.
- medR = floor(median rank) + 1; meanR = mean rank + 1.

R@k and mAP@10 are fractions here (WavCaps prints percent).
"""

from __future__ import annotations

import numpy as np

#: the recall cut-offs reported, and the depth of (m)AP
RECALL_AT = (1, 5, 10, 50)
AP_DEPTH = 10
#: captions compared at once when ranking captions per clip (bounds memory to about BLOCK × n_captions)
BLOCK = 1024


def _summary(ranks: np.ndarray, ap: np.ndarray) -> dict[str, float]:
    scores = {f"R@{k}": float(np.mean(ranks < k)) for k in RECALL_AT}
    scores[f"mAP@{AP_DEPTH}"] = float(np.mean(ap))
    scores["medR"] = float(np.floor(np.median(ranks)) + 1)
    scores["meanR"] = float(np.mean(ranks) + 1)
    return scores


def audio_to_text(similarity: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Audio→text scores; ``similarity[a, t]`` between clip ``a`` and caption ``t`` whose clip is ``owner[t]``."""
    n_audio, n_captions = similarity.shape
    own = similarity[owner, np.arange(n_captions)]
    caption_rank = np.empty(n_captions, dtype=np.int64)  # each caption's rank in its own clip's list
    for start in range(0, n_captions, BLOCK):
        part = slice(start, start + BLOCK)
        caption_rank[part] = (similarity[owner[part]] > own[part, None]).sum(axis=1)
    order = np.lexsort((caption_rank, owner))  # by clip, then by rank
    ranked_owner, ranked = owner[order], caption_rank[order]
    first = np.r_[0, np.flatnonzero(np.diff(ranked_owner)) + 1]
    count = np.diff(np.r_[first, n_captions])
    position_in_clip = np.arange(n_captions) - np.repeat(first, count) + 1  # i = 1, 2, ... among the clip's hits
    precision = np.where(ranked < AP_DEPTH, position_in_clip / (ranked + 1), 0.0)
    clips = ranked_owner[first]
    ranks = np.full(n_audio, n_captions, dtype=np.int64)  # a clip without captions is never found
    ranks[clips] = ranked[first]
    ap = np.zeros(n_audio)
    ap[clips] = np.add.reduceat(precision, first) / count
    return _summary(ranks, ap)


def text_to_audio(similarity: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Text→audio scores, same inputs as :func:`audio_to_text`."""
    own = similarity[owner, np.arange(similarity.shape[1])]
    ranks = (similarity > own[None, :]).sum(axis=0)
    return _summary(ranks, np.where(ranks < AP_DEPTH, 1.0 / (ranks + 1), 0.0))


def cosine_similarity(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """``(n_audio, n_text)`` cosine similarities, in float64."""
    audio, text = audio.astype(np.float64), text.astype(np.float64)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return audio @ text.T
