"""Batched beam search with trigram blocking, and greedy decoding, for any step function.

Conventions are R2Gen's: one id (0 by default) is bos, eos and padding; the search starts
from bos; a hypothesis ends when it emits eos or reaches ``max_length`` tokens; hypotheses
are ranked by the plain sum of token log-probabilities (upstream's default: no length
penalty); the best one is returned.

Trigram blocking: a token that would repeat a trigram already present in the hypothesis is
forbidden (its log-probability set to -inf). Upstream's beam search
(``CaptionModel.beam_search``) ignores its ``block_trigrams`` option and only its sampling
path applies it, as a soft penalty (log-prob - 2 ln 2 per earlier occurrence); here blocking is
hard and applies to beam and greedy search alike (``block_trigrams=False`` turns it off).

``step(tokens, state) -> (log_probs, state)`` receives every hypothesis's tokens so far
(N, t+1), bos first, and returns (N, V) log-probabilities of the next token.
``reorder(state, index)`` keeps the rows ``index`` of the state (after beams are re-ranked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
ReorderFn = Callable[[Any, torch.Tensor], Any]


def trigram_block_mask(generated: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(N, V) bool: True for tokens c such that (g[-2], g[-1], c) already occurs in row g.

    ``generated`` (N, L) holds the generated tokens only (no bos)."""
    n, length = generated.shape
    mask = torch.zeros(n, vocab_size + 1, dtype=torch.bool, device=generated.device)
    if length >= 3:
        last_two = generated[:, -2:]
        earlier_first, earlier_second, earlier_third = generated[:, :-2], generated[:, 1:-1], generated[:, 2:]
        match = (earlier_first == last_two[:, :1]) & (earlier_second == last_two[:, 1:])
        # Non-matching positions scatter into the spare column `vocab_size`, dropped below.
        mask.scatter_(1, torch.where(match, earlier_third, torch.full_like(earlier_third, vocab_size)), True)
    return mask[:, :vocab_size]


@dataclass
class BeamSearchOutput:
    sequences: torch.Tensor  # (B, L) best hypothesis per input, eos and padding = pad_id
    scores: torch.Tensor  # (B,) its summed log-probability


def beam_search(step: StepFn, state: Any, *, batch_size: int, beam_size: int = 3, max_length: int = 60,
                bos_id: int = 0, eos_id: int = 0, pad_id: int = 0, block_trigrams: bool = True,
                reorder: ReorderFn | None = None, device: torch.device | str = "cpu") -> BeamSearchOutput:
    """Beam search over ``batch_size`` inputs at once; ``state`` holds ``batch_size * beam_size``
    rows, each input's beams consecutive (beams of an input start identical)."""
    n = batch_size * beam_size
    tokens = torch.full((n, 1), bos_id, dtype=torch.long, device=device)
    # Only beam 0 is live at the start: the others are copies and would give duplicates.
    beam_scores = torch.zeros(batch_size, beam_size, device=device)
    beam_scores[:, 1:] = float("-inf")
    best_scores = torch.full((batch_size,), float("-inf"), device=device)
    best_sequences: list[torch.Tensor | None] = [None] * batch_size
    offsets = (torch.arange(batch_size, device=device) * beam_size).unsqueeze(1)

    for t in range(max_length):
        log_probs, state = step(tokens, state)
        log_probs = log_probs.float()
        vocab_size = log_probs.size(-1)
        if block_trigrams:
            log_probs = log_probs.masked_fill(trigram_block_mask(tokens[:, 1:], vocab_size), float("-inf"))
        candidates = (beam_scores.reshape(n, 1) + log_probs).reshape(batch_size, beam_size * vocab_size)
        top_scores, top_index = candidates.topk(beam_size, dim=1)
        source_beam = torch.div(top_index, vocab_size, rounding_mode="floor")
        next_token = top_index % vocab_size
        rows = (source_beam + offsets).reshape(-1)
        tokens = torch.cat([tokens.index_select(0, rows), next_token.reshape(-1, 1)], dim=1)
        if reorder is not None:
            state = reorder(state, rows)

        ended = next_token == eos_id
        if t == max_length - 1:
            ended = torch.ones_like(ended)
        ended &= torch.isfinite(top_scores)
        for b, k in ended.nonzero().tolist():
            score = top_scores[b, k]
            if score > best_scores[b]:
                best_scores[b] = score
                best_sequences[b] = tokens[b * beam_size + k, 1:].clone()
        beam_scores = top_scores.masked_fill(ended, float("-inf"))
        # Scores only fall as hypotheses grow (log-probs <= 0), so an input is settled once its
        # best finished hypothesis beats every live one.
        if bool((best_scores >= beam_scores.max(dim=1).values).all()):
            break

    length = max((len(s) for s in best_sequences if s is not None), default=0)
    sequences = torch.full((batch_size, max(length, 1)), pad_id, dtype=torch.long, device=device)
    for b, seq in enumerate(best_sequences):
        if seq is not None:
            sequences[b, :len(seq)] = seq
    sequences[sequences == eos_id] = pad_id
    return BeamSearchOutput(sequences=_cut_after_first(sequences, pad_id), scores=best_scores)


def greedy_search(step: StepFn, state: Any, *, batch_size: int, max_length: int = 60, bos_id: int = 0,
                  eos_id: int = 0, pad_id: int = 0, block_trigrams: bool = True,
                  reorder: ReorderFn | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Most likely token at each step; (B, L) ids, ``pad_id`` after each end."""
    del reorder  # rows never move in greedy search
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_length):
        log_probs, state = step(tokens, state)
        if block_trigrams:
            log_probs = log_probs.masked_fill(trigram_block_mask(tokens[:, 1:], log_probs.size(-1)), float("-inf"))
        next_token = log_probs.argmax(dim=-1).masked_fill(finished, pad_id)
        tokens = torch.cat([tokens, next_token.unsqueeze(1)], dim=1)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
    sequences = tokens[:, 1:].clone()
    sequences[sequences == eos_id] = pad_id
    return _cut_after_first(sequences, pad_id)


def _cut_after_first(sequences: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Everything after a row's first pad becomes pad (eos == pad in R2Gen's vocabulary)."""
    seen_pad = (sequences == pad_id).cumsum(dim=1) > 0
    return sequences.masked_fill(seen_pad, pad_id)
