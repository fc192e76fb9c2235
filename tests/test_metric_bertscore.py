"""BERTScore: boxmed-eval's numbers equal the bert-score package's own call on the same texts,
with tiny randomly initialised models saved in the official layouts (RoBERTa for the cxr
variant, DistilBERT for radeval); missing or wrong weights are refused with what to pass."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
bert_score = pytest.importorskip("bert_score")

from boxmed_eval.errors import BoxmedError  # noqa: E402
from boxmed_eval.metrics import METRICS, compute_metrics  # noqa: E402
from boxmed_eval.metrics.bertscore import VARIANTS, baseline_file  # noqa: E402

CORPUS = ["the heart is normal in size .", "no pleural effusion or pneumothorax .", "mild cardiomegaly .",
          "lungs are clear .", "small left pleural effusion .", "no acute osseous abnormality ."]
REFS = {"s1": "The heart is normal.  No effusion.", "s2": "Mild cardiomegaly.", "s3": "Lungs are clear.",
        "s4": "No pneumothorax."}
HYPS = {"s1": "Heart   is normal in size.", "s2": "No pleural effusion.", "s3": "Lungs are clear.",
        "s4": "Small left effusion."}


def _roberta_dir(root: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    path = root / "distilroberta"
    path.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    # from_pretrained: transformers 5 ignores vocab_file= in the constructor
    tokenizer = RobertaTokenizer.from_pretrained(str(path), model_max_length=60)
    tokenizer.save_pretrained(path)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                           intermediate_size=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(path)
    return path


def _distilbert_dir(root: Path) -> Path:
    from transformers import BertTokenizer, DistilBertConfig, DistilBertModel

    path = root / "distilbert"
    path.mkdir()
    words = sorted({w for line in CORPUS for w in line.split()})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(path), do_lower_case=True, model_max_length=60)
    tokenizer.save_pretrained(path)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=6, n_heads=2, hidden_dim=37,
                              max_position_embeddings=64)
    torch.manual_seed(1)
    DistilBertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bertscore")
    return {"cxr": _roberta_dir(root), "radeval": _distilbert_dir(root)}


def _package_f1(path: Path, variant: str, cands: list[str], refs: list[str], idf: bool = False) -> list[float]:
    scorer = bert_score.BERTScorer(model_type=str(path), num_layers=5, lang="en", rescale_with_baseline=True,
                                   baseline_path=str(baseline_file(VARIANTS[variant])), device="cpu")
    if variant == "cxr":
        # bert-score asks RoBERTa's tokenizer for add_prefix_space=True per call, which transformers 5
        # ignores; a tokenizer built with it restores what bert-score computes on transformers 3/4
        from transformers import AutoTokenizer

        scorer._tokenizer = AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)
    if idf:
        scorer._idf = True
        scorer.compute_idf(refs)
    return scorer.score(cands, refs)[2].tolist()


def test_roberta_tokens_have_the_prefix_space(models: dict[str, Path]) -> None:
    """bert-score's sent_encode on our scorer gives the tokens of ' ' + text (bert-score on
    transformers 3/4), not those of text alone (what it silently does on transformers 5)."""
    from bert_score.utils import sent_encode
    from transformers import AutoTokenizer

    metric = METRICS.get("bertscore")(model=str(models["cxr"]), device="cpu")
    scorer = metric.build_scorer([])
    plain = AutoTokenizer.from_pretrained(str(models["cxr"]))
    text = "Lungs are clear."
    assert sent_encode(scorer._tokenizer, text) == plain.encode(" " + text)
    assert sent_encode(scorer._tokenizer, text) != plain.encode(text)


@pytest.mark.parametrize("variant", ["cxr", "radeval"])
def test_equals_bert_score_package(models: dict[str, Path], variant: str) -> None:
    result = compute_metrics(["bertscore"], REFS, HYPS,
                             options={"bertscore": {"variant": variant, "model": str(models[variant]),
                                                    "device": "cpu"}})
    name = f"bertscore_{variant}"
    assert not result.messages
    ids = list(REFS)
    cands, refs = [HYPS[i] for i in ids], [REFS[i] for i in ids]
    if variant == "cxr":  # CXR-Report-Metric collapses runs of spaces first
        cands = [" ".join(c.split(" ")).replace("   ", " ") for c in cands]
        refs = [r.replace("  ", " ") for r in refs]
    expected = _package_f1(models[variant], variant, cands, refs)
    got = [result.per_sample[name][i] for i in ids]
    assert got == pytest.approx(expected, abs=1e-6)
    assert result.corpus[name] == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert got[2] == pytest.approx(1.0, abs=1e-5)  # identical texts score 1 after rescaling
    assert variant in result.conventions[name] or VARIANTS[variant].model in result.conventions[name]


def test_idf_variant_has_its_own_name(models: dict[str, Path]) -> None:
    result = compute_metrics(["bertscore"], REFS, HYPS,
                             options={"bertscore": {"model": str(models["cxr"]), "idf": "true", "device": "cpu"}})
    assert set(result.corpus) == {"bertscore_cxr_idf"}
    ids = list(REFS)
    expected = _package_f1(models["cxr"], "cxr", [" ".join(HYPS[i].split()) if "   " in HYPS[i] else HYPS[i]
                                                  for i in ids], [REFS[i].replace("  ", " ") for i in ids], idf=True)
    assert [result.per_sample["bertscore_cxr_idf"][i] for i in ids] == pytest.approx(expected, abs=1e-6)


def test_wrong_architecture_is_refused(models: dict[str, Path]) -> None:
    metric = METRICS.get("bertscore")(variant="cxr", model=str(models["radeval"]), device="cpu")
    assert metric.available()[0]  # the directory exists ...
    with pytest.raises(BoxmedError, match="not a distilroberta-base model"):
        metric.compute(REFS, HYPS)  # ... but it is a DistilBERT: bertscore_cxr would lie


def test_missing_weights_say_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_BERTSCORE_CXR_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = METRICS.get("bertscore")().available()
    assert not ok and "bertscore.model=PATH" in reason and "BOXMED_BERTSCORE_CXR_MODEL" in reason
    result = compute_metrics(["bertscore"], REFS, HYPS)
    assert result.corpus == {} and "skipped" in result.messages[0]
    ok, reason = METRICS.get("bertscore")(model=str(tmp_path)).available()
    assert not ok and "no config.json" in reason
    with pytest.raises(BoxmedError, match="variant"):
        METRICS.get("bertscore")(variant="large")
