"""SembScore: CheXbert [CLS] embeddings of a tiny random CheXbert in the official layout,
compared with CXR-Report-Metric's encode.py procedure (one report at a time, unpadded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from boxmed_eval.metrics import METRICS, compute_metrics  # noqa: E402
from boxmed_eval.metrics.labelers.chexbert import build_chexbert_model  # noqa: E402
from tests.test_chexbert import tiny  # noqa: E402,F401  (the fixture: bert dir + chexbert.pth)

REFS = {"a": "No pleural effusion.", "b": "Mild cardiomegaly.\nThe heart is normal.", "c": "Lungs are clear.",
        "d": ""}
HYPS = {"a": "Small left pleural effusion.", "b": "The heart is normal.", "c": "Lungs are clear.",
        "d": "No edema."}


def _reference_embedding(bert_dir: Path, state: dict, text: str) -> np.ndarray:
    """encode.py: tokenizer.tokenize, encode_plus, cut to 512 keeping [SEP], [CLS] of the last layer."""
    from transformers import BertConfig, BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(bert_dir))
    model = build_chexbert_model(BertConfig.from_pretrained(str(bert_dir)))
    model.load_state_dict({k[len("module."):]: v for k, v in state.items()}, strict=False)
    model.eval()
    text = " ".join(text.strip().replace("\n", " ").split())
    tokens = tokenizer.tokenize(text)
    # encode_plus(tokens) (gone in transformers 5): [CLS] + ids + [SEP]
    ids = [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(tokens), tokenizer.sep_token_id] if tokens else [
        tokenizer.cls_token_id, tokenizer.sep_token_id]
    if len(ids) > 512:
        ids = ids[:511] + [tokenizer.sep_token_id]
    with torch.no_grad():
        hidden = model.bert(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0]
    return hidden[0, 0].numpy().astype(np.float32)


@pytest.fixture(scope="module")
def spread(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:  # noqa: F811
    """The tiny CheXbert with large word embeddings: a random 2-layer BERT's [CLS] states are
    otherwise nearly identical for every text (cosines within 1e-5 of 1 would test nothing)."""
    checkpoint, bert_dir, state = tiny
    state = {k: v.clone() for k, v in state.items()}
    state["module.bert.embeddings.word_embeddings.weight"] *= 40
    state["module.bert.embeddings.position_embeddings.weight"].zero_()
    # [CLS] (id 2) and token types carry nothing: its final state is what attention gathers
    state["module.bert.embeddings.word_embeddings.weight"][2].zero_()
    state["module.bert.embeddings.token_type_embeddings.weight"].zero_()
    path = tmp_path_factory.mktemp("semb") / "chexbert.pth"
    torch.save({"model_state_dict": state}, path)
    return path, bert_dir, state


def test_equals_encode_py_procedure(spread) -> None:
    checkpoint, bert_dir, state = spread
    options = {"sembscore": {"checkpoint": str(checkpoint), "bert": str(bert_dir), "device": "cpu", "batch_size": 2}}
    result = compute_metrics(["sembscore"], REFS, HYPS, options=options)
    assert not result.messages
    for i in REFS:
        ref, hyp = _reference_embedding(bert_dir, state, REFS[i]), _reference_embedding(bert_dir, state, HYPS[i])
        expected = float((ref * hyp).sum() / (np.linalg.norm(ref) * np.linalg.norm(hyp)))
        assert result.per_sample["sembscore"][i] == pytest.approx(expected, abs=1e-5), i
    assert result.per_sample["sembscore"]["c"] == pytest.approx(1.0, abs=1e-6)
    assert result.corpus["sembscore"] == pytest.approx(np.mean(list(result.per_sample["sembscore"].values())))
    # not a constant: different reports give different similarities
    assert min(result.per_sample["sembscore"].values()) < 0.99, result.per_sample["sembscore"]
    assert len({round(v, 4) for v in result.per_sample["sembscore"].values()}) > 2


def test_missing_checkpoint_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_CHEXBERT_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = METRICS.get("sembscore")().available()
    assert not ok and "sembscore.checkpoint=PATH" in reason and "BOXMED_CHEXBERT_CHECKPOINT" in reason
