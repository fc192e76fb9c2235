"""Prompt templates of the three training tasks, and the output format they ask for.

All three are single-image chat turns (Qwen2-VL chat format, image first, then the text).

* **MCL** (medical concept learning, paper Sec. 3.2.1, Fig. 4b): the model writes its
  structured reasoning, one chain per finding sentence ``Finding -> Disease -> Anatomy``
  (plus the box when the dataset has one), inside ``<think>...</think>``, then the findings
  section inside ``<answer>...</answer>``. Target: :func:`boxmed_model.cot.render_target`.
* **SVR** (spatially verifiable reinforcement, Sec. 3.2.2, Visual-RFT's grounding format):
  given one finding phrase, the model reasons inside ``<think>`` and answers the box as
  ``(x1,y1),(x2,y2)`` with coordinates normalised to 0..1000 (Qwen2-VL's grounding
  convention) inside ``<answer>``. Rewarded by :mod:`boxmed_model.rewards`.
* **Report** (downstream adapter, Sec. 3.3): image -> plain findings text, no tags.
"""

from __future__ import annotations

from typing import Any

SYSTEM_PROMPT = "You are a radiologist reading a chest X-ray."

MCL_PROMPT = (
    "Read this chest X-ray like a radiologist. For every finding, name its disease category and the "
    "anatomical region it is in, one chain per line as Finding -> Disease -> Anatomy, inside <think> </think>. "
    "Then write the findings section of the report inside <answer> </answer>."
)

SVR_PROMPT = (
    "Locate the region of this chest X-ray described by: \"{phrase}\". "
    "First think about the disease category and the anatomy inside <think> </think>, "
    "then give the bounding box as (x1,y1),(x2,y2) with coordinates from 0 to 1000 inside <answer> </answer>."
)

REPORT_PROMPT = "Write the findings section of the radiology report for this chest X-ray."

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def user_turn(text: str) -> list[dict[str, Any]]:
    """One user message with the image placeholder first, then ``text`` (the image itself
    goes in the dataset's ``images`` column / the processor's ``images=`` argument)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def assistant_turn(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def mcl_messages(target: str | None = None) -> list[dict[str, Any]]:
    messages = user_turn(MCL_PROMPT)
    return messages + [assistant_turn(target)] if target is not None else messages


def svr_messages(phrase: str) -> list[dict[str, Any]]:
    return user_turn(SVR_PROMPT.format(phrase=phrase))


def report_messages(findings: str | None = None) -> list[dict[str, Any]]:
    messages = user_turn(REPORT_PROMPT)
    return messages + [assistant_turn(findings)] if findings is not None else messages


def all_template_texts() -> list[str]:
    """Every fixed text the prompts and targets use (for training a small tokenizer)."""
    return [SYSTEM_PROMPT, MCL_PROMPT, SVR_PROMPT, REPORT_PROMPT,
            f"{THINK_OPEN} {THINK_CLOSE} {ANSWER_OPEN} {ANSWER_CLOSE}",
            "Finding: -> Concept: -> Disease: -> Anatomy: -> Box: (120,340),(560,880) (absent) (uncertain)"]
