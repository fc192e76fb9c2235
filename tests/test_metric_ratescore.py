"""RaTEScore: the entity grouping and the scoring on hand-made inputs (values worked out from the
RaTEScore 0.6.0 package's utils.post_process / utils.compute / scorer.compute_score), and the
whole metric on tiny random NER and embedding models saved in the Hugging Face layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from boxmed_eval.errors import BoxmedError
from boxmed_eval.metrics import METRICS, compute_metrics
from boxmed_eval.metrics.ratescore import (affinity_matrix, directional_score, group_entities, keep_sentences,
                                           ratescore_pair, regex_sentences)


def test_group_entities_plain() -> None:
    tokens = ["[CLS]", "a", "b", "c", "d", "e", "f", "[SEP]"]
    labels = ["O", "B-DISEASE", "I-DISEASE", "O", "B-ANATOMY", "O", "B-ABNORMALITY", "O"]
    assert group_entities(tokens, labels) == [(1, 2, "DISEASE"), (4, 4, "ANATOMY"), (6, 6, "ABNORMALITY")]
    # labels of padding positions beyond the tokens are ignored
    assert group_entities(["[CLS]", "a", "[SEP]"], ["O", "B-DISEASE", "O", "O", "O"]) == [(1, 1, "DISEASE")]


def test_group_entities_quirks() -> None:
    tokens = ["[CLS]", "a", "b", "c", "d", "e", "f", "[SEP]"]
    # B-B: one-token entity; B-I-I then I-B closes at the I (type of the opening B); then B-I-O
    labels = ["O", "B-DISEASE", "B-ANATOMY", "I-ANATOMY", "I-ANATOMY", "B-DISEASE", "I-DISEASE", "O"]
    assert group_entities(tokens, labels) == [(1, 1, "DISEASE"), (2, 4, "ANATOMY"), (5, 6, "DISEASE")]
    # still open at the end: closed at the token before [SEP]
    assert group_entities(["[CLS]", "a", "b", "c", "[SEP]"],
                          ["O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "I-DISEASE"]) == [(1, 3, "DISEASE")]
    # ... unless a B-B left `end` set: that open entity is lost
    assert group_entities(["[CLS]", "a", "b", "c", "[SEP]"],
                          ["O", "B-DISEASE", "B-ANATOMY", "I-ANATOMY", "I-ANATOMY"]) == [(1, 1, "DISEASE")]
    # an I- without an open entity closes nothing
    assert group_entities(["[CLS]", "a", "b", "[SEP]"], ["O", "I-DISEASE", "O", "O"]) == []


def test_sentences_filter_and_regex_split() -> None:
    assert keep_sentences(["  No effusion. ", "ok", "   ", "A b"]) == ["No effusion.", "A b"]
    assert regex_sentences("No effusion. Mild cardiomegaly!\nLungs clear.") == [
        "No effusion.", "Mild cardiomegaly!", "Lungs clear."]
    assert regex_sentences("size 2.5 cm") == ["size 2.5 cm"]


# DEFAULT_MATRIX_LONG entries used below (scorer.py)
W_D_ND, W_ND_D, W_AN_AN, NEG = 0.3789136708096537, 0.10073046076318157, 0.2856134859160784, 0.8716553966489615


def test_scoring_hand_worked() -> None:
    torch = pytest.importorskip("torch")
    matrix = affinity_matrix("long")
    ref = (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), ["DISEASE", "ANATOMY"])
    hyp = (torch.tensor([[1.0, 1.0], [0.0, 2.0]]), ["NON-DISEASE", "ANATOMY"])
    c = 1 / math.sqrt(2)
    # reference side: DISEASE -> [1,1] (NON-DISEASE, negation pair), ANATOMY -> [0,2] (ANATOMY)
    p = (c * W_D_ND * NEG + 1.0 * W_AN_AN) / (W_D_ND + W_AN_AN)
    # generated side: NON-DISEASE ties both (cos 1/sqrt2): the first, DISEASE; ANATOMY -> ANATOMY
    r = (c * W_ND_D * NEG + 1.0 * W_AN_AN) / (W_ND_D + W_AN_AN)
    assert directional_score(*ref[:1], *hyp[:1], ref[1], hyp[1], matrix) == pytest.approx(p, rel=1e-6)
    assert directional_score(hyp[0], ref[0], hyp[1], ref[1], matrix) == pytest.approx(r, rel=1e-6)
    assert ratescore_pair(ref, hyp, matrix) == pytest.approx(2 * p * r / (p + r), rel=1e-6)
    # no entity on one side: 0.5; orthogonal entities: precision + recall = 0 -> 0
    assert ratescore_pair(ref, (torch.zeros(0, 2), []), matrix) == 0.5
    assert ratescore_pair((torch.tensor([[1.0, 0.0]]), ["DISEASE"]), (torch.tensor([[0.0, 1.0]]), ["DISEASE"]),
                          matrix) == 0.0
    short = affinity_matrix("short")
    assert short[("NEG", "WEIGHT")] == pytest.approx(0.3611577852354489) and matrix[("NEG", "WEIGHT")] == NEG
    with pytest.raises(BoxmedError, match="affinity"):
        affinity_matrix("medium")


# ------------------------------------------------------------------ tiny models

LABELS = ["O", "B-DISEASE", "I-DISEASE", "B-ANATOMY", "I-ANATOMY", "B-ABNORMALITY", "I-ABNORMALITY",
          "B-NON-DISEASE", "I-NON-DISEASE", "B-NON-ABNORMALITY", "I-NON-ABNORMALITY"]
WORDS = ["no", "pleural", "effusion", "mild", "cardio", "##megaly", "left", "lung", "is", "clear", "heart", ".",
         "the", "size", "normal", "small", "opacity"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("rate")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    common = dict(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    ner_dir = root / "ner"
    ner = BertForTokenClassification(BertConfig(**common, num_labels=len(LABELS),
                                                id2label=dict(enumerate(LABELS)),
                                                label2id={k: i for i, k in enumerate(LABELS)}))
    with torch.no_grad():  # mostly B-/I- labels, so that entities of several types come out
        ner.classifier.weight.mul_(40)
        ner.classifier.bias.copy_(torch.tensor([0.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5]))
    ner.save_pretrained(ner_dir)
    emb_dir = root / "emb"
    embedder = BertModel(BertConfig(**common))
    with torch.no_grad():  # a random tiny BERT's [CLS] states are nearly equal for every text: spread them
        embedder.embeddings.word_embeddings.weight.mul_(40)
        embedder.embeddings.word_embeddings.weight[2].zero_()  # [CLS]
        embedder.embeddings.position_embeddings.weight.zero_()
        embedder.embeddings.token_type_embeddings.weight.zero_()
    embedder.save_pretrained(emb_dir)
    for folder in (ner_dir, emb_dir):  # BertTokenizerFast(vocab_file=...) reads no vocabulary on transformers 5
        (folder / "vocab.txt").write_text(vocab.read_text())
        BertTokenizer.from_pretrained(str(folder), do_lower_case=True).save_pretrained(folder)
    return ner_dir, emb_dir


REFS = {"a": "No pleural effusion. Mild cardiomegaly.", "b": "The left lung is clear.\nHeart size normal.",
        "c": "Small opacity.", "d": ""}
HYPS = {"a": "No pleural effusion. Mild cardiomegaly.", "b": "Heart size normal.", "c": "Mild opacity.",
        "d": "No effusion."}


def test_entities_equal_one_sentence_at_a_time(models) -> None:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    ner_dir, emb_dir = models
    metric = METRICS.get("ratescore")(model=str(ner_dir), embedding_model=str(emb_dir), sentences="regex",
                                      device="cpu", batch_size=3)
    got = metric.entities(list(REFS.values()))
    tok = AutoTokenizer.from_pretrained(str(ner_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(ner_dir)).eval()
    for text, entities in zip(REFS.values(), got):
        expected = []
        for sentence in keep_sentences(regex_sentences(text)):
            enc = tok([sentence], max_length=512, truncation=True, return_tensors="pt")
            with torch.no_grad():
                labels = [LABELS[k] for k in model(**enc).logits.argmax(-1)[0].tolist()]
            tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
            expected += [(tok.convert_tokens_to_string(tokens[s:e + 1]), t) for s, e, t in group_entities(tokens, labels)]
        assert entities == expected, text
    assert sum(map(len, got)) >= 4 and len({t for e in got for _, t in e}) >= 2
    assert got[3] == []  # an empty report: no sentence, no entity


def test_metric_end_to_end(models) -> None:
    ner_dir, emb_dir = models
    options = {"ratescore": {"model": str(ner_dir), "embedding_model": str(emb_dir), "sentences": "regex",
                             "device": "cpu"}}
    result = compute_metrics(["ratescore"], REFS, HYPS, options=options)
    assert not result.messages
    per = result.per_sample["ratescore_regexsplit"]
    assert set(per) == set(REFS)
    assert per["a"] == pytest.approx(1.0, abs=1e-6)  # the same report
    assert per["d"] == 0.5  # no entity in the reference
    assert per["b"] != pytest.approx(1.0) and per["c"] != pytest.approx(1.0)
    assert result.corpus["ratescore_regexsplit"] == pytest.approx(sum(per.values()) / 4)
    short = compute_metrics(["ratescore"], REFS, HYPS,
                            options={"ratescore": {**options["ratescore"], "affinity": "short"}})
    assert set(short.per_sample) == {"ratescore_short_regexsplit"}
    assert short.per_sample["ratescore_short_regexsplit"]["c"] != pytest.approx(per["c"])


def test_weights_must_match(models, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    import shutil

    ner_dir, emb_dir = models
    broken = tmp_path / "ner"
    shutil.copytree(ner_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["classifier.bias"]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    metric = METRICS.get("ratescore")(model=str(broken), embedding_model=str(emb_dir), sentences="regex",
                                      device="cpu")
    with pytest.raises(BoxmedError, match="classifier.bias"):
        metric.models()


def test_without_weights_or_medspacy_says_what_to_pass(models, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_RATESCORE_MODEL", raising=False)
    monkeypatch.delenv("BOXMED_RATESCORE_EMBEDDING", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = METRICS.get("ratescore")().available()
    assert not ok and "--metric-option ratescore.model=DIR" in reason
    ner_dir, emb_dir = models
    ok, reason = METRICS.get("ratescore")(model=str(ner_dir)).available()
    assert not ok and "--metric-option ratescore.embedding_model=DIR" in reason
    try:
        import medspacy  # noqa: F401
    except ImportError:
        ok, reason = METRICS.get("ratescore")(model=str(ner_dir), embedding_model=str(emb_dir)).available()
        assert not ok and "medspacy" in reason and "ratescore.sentences=regex" in reason
    result = compute_metrics(["ratescore", "chexpert"], {"a": "No effusion."}, {"a": "Effusion."})
    assert "chexpert_f1" in result.corpus and not any(k.startswith("ratescore") for k in result.corpus)
    assert any("ratescore.model=DIR" in m for m in result.messages)


def test_default_splits_with_medspacy(models, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default variant hands each report to medspacy's pipeline (PyRuSH) and uses ``doc.sents``
    (a stand-in module here: medspacy is not installable on this stack)."""
    import sys
    import types

    calls: list = []

    def load(medspacy_enable: list[str]):
        calls.append(medspacy_enable)
        # splits at "|" so that the test sees which sentences the metric used
        return lambda text: types.SimpleNamespace(sents=[s for s in text.split("|")])

    monkeypatch.setitem(sys.modules, "medspacy", types.SimpleNamespace(load=load))
    ner_dir, emb_dir = models
    metric = METRICS.get("ratescore")(model=str(ner_dir), embedding_model=str(emb_dir), device="cpu")
    assert metric.available() == (True, "") and calls == [["medspacy_pyrush"]]
    split = metric.entities(["No pleural effusion|mild cardiomegaly"])
    regex = METRICS.get("ratescore")(model=str(ner_dir), embedding_model=str(emb_dir), device="cpu",
                                     sentences="regex")
    assert split == regex.entities(["No pleural effusion\nmild cardiomegaly"])  # same two sentences
    assert metric.metric_name == "ratescore" and regex.metric_name == "ratescore_regexsplit"
