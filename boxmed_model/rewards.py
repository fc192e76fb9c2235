"""SVR rewards, paper equations 6-9, with TRL ``GRPOTrainer`` reward-function signatures.

* Eq. 6: ``IoU(B_pred, B_gt) = |B_pred ∩ B_gt| / |B_pred ∪ B_gt|`` on corner boxes
  ``(x1, y1), (x2, y2)`` (top-left, bottom-right).
* Eq. 7: ``R_IoU = IoU if IoU > 0 else 0``; an answer without a parsable box scores 0.
* Eq. 8: ``R_format = 1`` when the whole completion is ``<think>...</think>`` then
  ``<answer>...</answer>`` (Visual-RFT's ``re.fullmatch(..., re.DOTALL)``), else 0.
* Eq. 9: ``R = R_IoU + R_format`` — TRL sums the two reward functions (weights 1, 1).

**Several boxes.** The answer is the text inside ``<answer>`` (the whole completion when the
tags are missing); every ``(x1,y1),(x2,y2)`` in it is a predicted box. A phrase may have
several ground-truth boxes (MS-CXR). Predicted and ground-truth boxes are matched one to
one so that the total IoU is maximal (Hungarian assignment, ``scipy``), and
``R_IoU = sum of matched IoUs / max(n_pred, n_gt)``. With one box on each side this is
exactly Eq. 6-7; it stays in [0, 1]; extra predicted boxes and missed ground-truth boxes
both lower it, so answering many boxes cannot game the reward.

Coordinates are Qwen2-VL's 0..1000 normalised ones on both sides (the ground truth is
converted with :func:`to_qwen`), so image resizing does not change them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from boxmed_eval import boxes
from boxmed_eval.records import Box

# Visual-RFT's format check, verbatim.
FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)

Corners = tuple[float, float, float, float]


# -------------------------------------------------------------------- box helpers

def _ordered(box: Sequence[float]) -> Box:
    """Corners -> a harness ``Box`` with x1 <= x2, y1 <= y2 (a model may write them swapped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return Box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Eq. 6 on corner boxes ``(x1, y1, x2, y2)`` (the harness's :func:`boxmed_eval.boxes.iou`);
    0 for empty unions or no overlap."""
    return float(boxes.iou(_ordered(a), _ordered(b)))


def parse_boxes(text: str) -> list[Corners]:
    """Every ``(x1,y1),(x2,y2)`` in ``text`` (Qwen's ``<|box_start|>`` wrappers tolerated), corners ordered."""
    found = []
    for corners in boxes.parse_box_strings(text):
        box = _ordered(corners)
        found.append((box.x1, box.y1, box.x2, box.y2))
    return found


def format_box(box: Sequence[float]) -> str:
    """``(x1,y1),(x2,y2)`` with integer 0..1000 coordinates."""
    return boxes.format_box_string(float(v) for v in box)


def to_qwen(box: Sequence[float], width: float, height: float) -> Corners:
    """Pixel corners -> Qwen2-VL 0..1000 normalised corners (rounded, clamped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    def norm(v: float, size: float) -> float:
        return float(min(1000, max(0, round(v / size * 1000))))
    return norm(x1, width), norm(y1, height), norm(x2, width), norm(y2, height)


def from_qwen(box: Sequence[float], width: float, height: float) -> Corners:
    """Qwen2-VL 0..1000 corners -> pixel corners of an image ``width`` x ``height``."""
    x1, y1, x2, y2 = (min(1000.0, max(0.0, float(v))) for v in box)
    return x1 / 1000 * width, y1 / 1000 * height, x2 / 1000 * width, y2 / 1000 * height


def answer_text(completion: str) -> str:
    """The text inside ``<answer>`` (the whole completion when there is no answer tag)."""
    match = ANSWER_RE.search(completion)
    return match.group(1) if match else completion


def think_text(completion: str) -> str:
    match = THINK_RE.search(completion)
    return match.group(1).strip() if match else ""


# -------------------------------------------------------------------- rewards

def matched_iou(predicted: Sequence[Sequence[float]], ground_truth: Sequence[Sequence[float]]) -> float:
    """Eq. 7 generalised to several boxes (see module docstring): optimal one-to-one
    matching, sum of matched IoUs / max(n_pred, n_gt); 0 when either side is empty."""
    if not predicted or not ground_truth:
        return 0.0
    if len(predicted) == 1 and len(ground_truth) == 1:
        value = iou(predicted[0], ground_truth[0])
        return value if value > 0 else 0.0
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    matrix = np.array([[iou(p, g) for g in ground_truth] for p in predicted])
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    total = float(matrix[rows, cols].sum())
    return total / max(len(predicted), len(ground_truth))


def iou_reward_one(completion: str, solution: Sequence[Sequence[float]]) -> float:
    """R_IoU of one completion against its ground-truth boxes (0..1000 corners)."""
    return matched_iou(parse_boxes(answer_text(completion)), [tuple(map(float, b)) for b in solution])


def format_reward_one(completion: str) -> float:
    """R_format (Eq. 8): 1.0 iff the whole completion is ``<think>..</think> <answer>..</answer>``."""
    return 1.0 if FORMAT_RE.fullmatch(completion.strip()) else 0.0


def completion_text(completion: Any) -> str:
    """TRL passes completions as strings, or for conversational prompts as
    ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return str(completion)


def iou_reward(completions: list[Any], solution: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: R_IoU per completion; ``solution`` is the dataset column with
    the ground-truth boxes of each prompt (a list of 0..1000 corner lists).

    Also logs (TRL's ``log_metric``) ``iou_group_std``, the mean over GRPO groups of R_IoU's
    standard deviation within a group, and ``iou_flat_groups``, the share of groups whose
    R_IoU is the same in every sample: GRPO's advantage is reward minus the group mean, so
    a group std of 0 means R_IoU gives SVR no learning signal (e.g. no sample has a box)."""
    rewards = [iou_reward_one(completion_text(c), s) for c, s in zip(completions, solution, strict=True)]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and rewards:
        stds = group_stds(rewards, [repr((p, s)) for p, s in zip(kwargs.get("phrase") or [None] * len(rewards),
                                                                   solution, strict=True)])
        log_metric("iou_group_std", sum(stds) / len(stds))
        log_metric("iou_flat_groups", sum(std == 0.0 for std in stds) / len(stds))
    return rewards


def group_stds(rewards: Sequence[float], keys: Sequence[str]) -> list[float]:
    """Population std of ``rewards`` over each run of consecutive equal ``keys`` (TRL puts a
    prompt's ``num_generations`` completions next to each other)."""
    import statistics

    stds: list[float] = []
    start = 0
    for i in range(1, len(rewards) + 1):
        if i == len(rewards) or keys[i] != keys[start]:
            stds.append(statistics.pstdev(rewards[start:i]) if i - start > 1 else 0.0)
            start = i
    return stds


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: R_format per completion."""
    return [format_reward_one(completion_text(c)) for c in completions]


def total_reward(completion: str, solution: Sequence[Sequence[float]]) -> float:
    """Eq. 9: R = R_IoU + R_format (what GRPO receives as the sum of the two functions)."""
    return iou_reward_one(completion, solution) + format_reward_one(completion)


iou_reward.__name__ = "iou_reward"
format_reward.__name__ = "format_reward"
