"""CheXbert labeler: loading a checkpoint in the real layout (tiny random BERT), strict keys,
label mapping, batching, missing resources."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from boxmed_eval.errors import BoxmedError, MissingResourceError  # noqa: E402
from boxmed_eval.metrics.labelers import get_labeler  # noqa: E402
from boxmed_eval.metrics.labelers.chexbert import CheXbertLabeler, build_chexbert_model  # noqa: E402
from boxmed_eval.records import CHEXPERT_CLASSES  # noqa: E402

WORDS = ("no", "pleural", "effusion", "mild", "cardiomegaly", "the", "heart", "is", "normal", "lungs", "are",
         "clear", "small", "left", "right", "pneumothorax", "edema", ".", ",")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A bert dir (vocab.txt, config.json) and chexbert.pth in the official layout."""
    from transformers import BertConfig, BertTokenizerFast

    root = tmp_path_factory.mktemp("chexbert")
    bert_dir = root / "bert"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # from_pretrained, not BertTokenizerFast(vocab_file=...): on transformers 5 the latter reads no
    # vocabulary and maps every word to [UNK], which would make every report look alike
    tokenizer = BertTokenizerFast.from_pretrained(bert_dir, do_lower_case=True)
    assert tokenizer("pleural effusion")["input_ids"][1:-1] == [5 + WORDS.index("pleural"), 5 + WORDS.index("effusion")]
    tokenizer.save_pretrained(bert_dir)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    config.save_pretrained(bert_dir)
    torch.manual_seed(0)
    model = build_chexbert_model(config)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    checkpoint = root / "chexbert.pth"
    torch.save({"model_state_dict": state, "epoch": 3}, checkpoint)
    return checkpoint, bert_dir, state


def test_loads_official_layout_and_labels(tiny) -> None:
    checkpoint, bert_dir, _ = tiny
    labeler = get_labeler("chexbert", checkpoint=checkpoint, bert=bert_dir, device="cpu", batch_size=2)
    assert isinstance(labeler, CheXbertLabeler)
    reports = ["No pleural effusion.", "Mild cardiomegaly.\nThe heart is normal.", "", "lungs are clear " * 80]
    out = labeler.label(reports)
    assert len(out) == 4
    for labels in out:
        assert list(labels) == list(CHEXPERT_CLASSES)
        assert all(v in (1, 0, -1, None) for v in labels.values())
        assert labels["No Finding"] in (1, None)  # its head has two classes only
    # batching and sorting by length must not change any report's labels
    one_by_one = get_labeler("chexbert", checkpoint=checkpoint, bert=bert_dir, device="cpu", batch_size=1)
    assert one_by_one.label(reports) == out


def test_weights_are_really_used(tiny, tmp_path: Path) -> None:
    """Heads set by hand give known classes: the loaded weights, not random ones, decide."""
    _, bert_dir, state = tiny
    state = {k: v.clone() for k, v in state.items()}
    wanted = [(i % 4) for i in range(13)] + [1]
    for i, cls in enumerate(wanted):
        state[f"module.linear_heads.{i}.weight"].zero_()
        bias = state[f"module.linear_heads.{i}.bias"]
        bias.fill_(-5.0)
        bias[cls] = 5.0
    path = tmp_path / "chexbert.pth"
    torch.save({"model_state_dict": state}, path)
    labels = get_labeler("chexbert", checkpoint=path, bert=bert_dir, device="cpu").label(["Small left effusion."])[0]
    mapping = {0: None, 1: 1, 2: 0, 3: -1}
    for i, name in enumerate(CHEXPERT_CLASSES[:13]):
        assert labels[name] == mapping[wanted[i]], name
    assert labels["No Finding"] == 1


def test_strict_key_check_fails_loudly(tiny, tmp_path: Path) -> None:
    _, bert_dir, state = tiny
    renamed = dict(state)
    renamed["module.linear_heads.99.bias"] = renamed.pop("module.linear_heads.13.bias")
    path = tmp_path / "renamed.pth"
    torch.save({"model_state_dict": renamed}, path)
    labeler = get_labeler("chexbert", checkpoint=path, bert=bert_dir, device="cpu")
    with pytest.raises(BoxmedError, match=r"linear_heads\.13\.bias.*linear_heads\.99\.bias"):
        labeler.label(["No effusion."])


def test_not_a_checkpoint(tiny, tmp_path: Path) -> None:
    _, bert_dir, state = tiny
    path = tmp_path / "bare.pth"
    torch.save(state, path)  # a bare state dict, no 'model_state_dict'
    with pytest.raises(BoxmedError, match="model_state_dict"):
        get_labeler("chexbert", checkpoint=path, bert=bert_dir, device="cpu").label(["x"])


def test_missing_checkpoint_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_CHEXBERT_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingResourceError, match=r"--checkpoint.*BOXMED_CHEXBERT_CHECKPOINT"):
        get_labeler("chexbert")
    with pytest.raises(MissingResourceError, match="--checkpoint"):
        get_labeler("chexbert", checkpoint=tmp_path / "nope.pth")


def test_checkpoint_from_environment(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint, bert_dir, _ = tiny
    monkeypatch.setenv("BOXMED_CHEXBERT_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("BOXMED_CHEXBERT_BERT", str(bert_dir))
    labeler = get_labeler("chexbert", device="cpu")
    assert labeler.checkpoint_path == checkpoint
    assert len(labeler.label(["No edema."])) == 1


def test_official_samples_with_the_real_checkpoint() -> None:
    """Runs only where the real chexbert.pth is configured: CheXbert's own labels of its 4
    sample reports (chexbert_labeled_reports.csv) must come out exactly."""
    import csv
    import os

    if not os.environ.get("BOXMED_CHEXBERT_CHECKPOINT"):
        pytest.skip("set BOXMED_CHEXBERT_CHECKPOINT (and BOXMED_CHEXBERT_BERT or an HF cache) to run")
    samples = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chexpert_samples" / "chexbert_labeled_reports.csv"
    if not samples.exists():
        pytest.skip(f"{samples} not found")
    with samples.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = get_labeler("chexbert").label([r["Report Impression"] for r in rows])
    for row, got in zip(rows, labels):
        assert got == {c: None if row[c] == "" else int(float(row[c])) for c in CHEXPERT_CLASSES}
