"""R2Gen baseline plugin (plugins/r2gen): modules, decoding, tokenizer, checkpoint layout,
training and generation through the plugin interface."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from boxmed_eval.errors import BoxmedError, DataError, MissingResourceError
from boxmed_eval.plugins import MODELS, get_model_class
from plugins.r2gen.decoding import beam_search, greedy_search, trigram_block_mask
from plugins.r2gen.model import (
    ConditionalLayerNorm,
    R2GenConfig,
    R2GenModel,
    RelationalMemory,
    resnet_trunk,
    subsequent_mask,
    torchvision_to_trunk_state_dict,
)
from plugins.r2gen.plugin import R2GenPlugin
from plugins.r2gen.tokenizer import R2GenTokenizer, clean_report_iu_xray, clean_report_mimic_cxr
from tests.conftest import shared_data, write_iu_dataset

OFFICIAL_KEYS = Path(__file__).resolve().parents[1] / "plugins" / "r2gen" / "official_keys.json"
TINY = dict(resnet_depth=18, resnet_width=8, d_model=32, d_ff=32, rm_d_model=32, num_heads=4, rm_num_heads=4,
            num_layers=2, image_size=64, max_seq_length=12)


def tiny_model(dataset_name: str = "iu_xray", vocab_size: int = 20, seed: int = 0) -> R2GenModel:
    torch.manual_seed(seed)
    return R2GenModel(R2GenConfig(dataset_name=dataset_name, vocab_size=vocab_size, **TINY))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the plugin in-process, as the entry point `r2gen = plugins.r2gen.plugin:R2GenPlugin` does."""
    MODELS.discover()
    monkeypatch.setitem(MODELS._entries, "r2gen", R2GenPlugin)
    MODELS.failures.pop("r2gen", None)


# ----------------------------------------------------------------------------- modules


def test_shapes_through_every_module() -> None:
    model = tiny_model().eval()
    images = torch.randn(2, 2, 3, 64, 64)  # IU X-Ray: two views
    patches, pooled = model.visual_extractor(images[:, 0])
    assert patches.shape == (2, 2 * 2, 8 * 8) and pooled.shape == (2, 64)  # 64 px -> 2x2 map, 512/8 channels
    feats = model.image_features(images)
    assert feats.shape == (2, 2 * 4, 64)  # views concatenated along the patch axis
    hidden = model.encoder_decoder.encode(feats)
    assert hidden.shape == (2, 8, 32)
    rm = model.encoder_decoder.model.rm
    memory = rm(torch.randn(2, 5, 32), rm.init_memory(2))
    assert memory.shape == (2, 5, 3 * 32)
    assert torch.equal(rm.init_memory(1)[0, :, :3], torch.eye(3))
    cln = ConditionalLayerNorm(32, 3, 32)
    assert cln(torch.randn(2, 5, 32), memory).shape == (2, 5, 32)
    seq = torch.tensor([[0, 3, 4, 5, 0, 0], [0, 7, 8, 9, 10, 0]])
    log_probs = model(images, seq)
    assert log_probs.shape == (2, 5, 21)  # T-1 positions, vocabulary + 1 classes
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5), atol=1e-5)
    mimic = tiny_model("mimic_cxr")
    assert mimic.image_features(torch.randn(3, 3, 64, 64)).shape == (3, 4, 64)
    with pytest.raises(DataError, match="view"):
        mimic.image_features(images)


def test_relational_memory_has_upstream_parameter_shapes() -> None:
    rm = RelationalMemory(num_slots=3, d_model=16, num_heads=4)
    assert rm.W.weight.shape == (32, 16) and rm.U.weight.shape == (32, 16)
    assert [k for k in rm.state_dict() if k.startswith("mlp")] == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
                                                                  "mlp.2.bias"]


def test_incremental_decoding_equals_full_recomputation() -> None:
    model = tiny_model().eval()
    ed = model.encoder_decoder
    with torch.no_grad():
        hidden = ed.encode(model.image_features(torch.randn(2, 2, 3, 64, 64)))
        tokens = torch.tensor([[0, 3, 4, 5, 6], [0, 9, 8, 7, 6]])
        state = ed.start_decoding(hidden)
        stepwise = []
        for t in range(tokens.size(1)):
            log_probs, state = ed.decode_step(tokens[:, t], state)
            stepwise.append(log_probs)
        # Upstream's way: the whole prefix through the decoder, causal mask.
        full = torch.log_softmax(ed.logit(ed.model.decode(hidden, None, tokens, subsequent_mask(5))), dim=-1)
    assert torch.allclose(torch.stack(stepwise, 1), full, atol=1e-5)


def test_imagenet_weights_in_torchvision_names_load() -> None:
    trunk = resnet_trunk(18, 8)
    names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    torchvision_style = {f"{names[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v.clone() + 1
                         for k, v in trunk.state_dict().items()}
    torchvision_style["fc.weight"] = torch.zeros(1000, 64)
    torchvision_style["fc.bias"] = torch.zeros(1000)
    renamed = torchvision_to_trunk_state_dict(torchvision_style)
    assert set(renamed) == set(trunk.state_dict())
    assert "4.0.conv1.weight" in renamed and "fc.weight" not in renamed
    with pytest.raises(DataError, match="unexpected key"):
        torchvision_to_trunk_state_dict({"head.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------- decoding

A, B, C, EOS = 1, 2, 3, 0
TINY_P = 1e-9


def markov_step(tables: list[dict[int, dict[int, float]]]):
    """Toy language model: next-token distribution depends on the last token only; row r of a
    batch uses tables[r]. The state holds each row's batch index (reordered by the search).
    Finished hypotheses are still stepped (their scores are -inf): eos is followed by eos."""
    def step(tokens: torch.Tensor, rows: torch.Tensor):
        out = torch.full((tokens.size(0), 4), math.log(TINY_P))
        for i, (last, row) in enumerate(zip(tokens[:, -1].tolist(), rows.tolist())):
            context = "bos" if tokens.size(1) == 1 else last
            for token, p in tables[row][context].items():
                out[i, token] = math.log(p)
        return torch.log_softmax(out, -1), rows
    return step


# beam beats greedy: greedy takes "a" (0.5) then ends (0.25): 0.125; beam finds "b" then eos (0.4 * 0.9 = 0.36)
BEAM_BEATS_GREEDY = {"bos": {A: 0.5, B: 0.4, EOS: 0.1}, A: {A: 0.25, B: 0.25, C: 0.25, EOS: 0.25},
                     B: {EOS: 0.9, A: 0.05, C: 0.05}, C: {EOS: 1.0}, EOS: {EOS: 1.0}}
# "a b a b a b ..." unless repeated trigrams are blocked
ALTERNATING = {"bos": {A: 0.9, EOS: 0.1}, A: {B: 0.9, EOS: 0.1}, B: {A: 0.8, EOS: 0.2}, C: {EOS: 1.0},
               EOS: {EOS: 1.0}}


def nonzero(sequences: torch.Tensor) -> list[list[int]]:
    return [[t for t in row if t != 0] for row in sequences.tolist()]


def run_beam(tables, *, block: bool, beam_size: int = 2, max_length: int = 6) -> list[list[int]]:
    batch = len(tables)
    rows = torch.arange(batch).repeat_interleave(beam_size)
    out = beam_search(markov_step(tables), rows, batch_size=batch, beam_size=beam_size, max_length=max_length,
                      block_trigrams=block, reorder=lambda state, index: state.index_select(0, index))
    return nonzero(out.sequences)


def test_trigram_block_mask_by_hand() -> None:
    generated = torch.tensor([[A, B, C, A, B],  # (a, b) was followed by c: block c
                              [C, C, C, A, B],  # no earlier (a, b): nothing blocked
                              [C, C, C, C, C]])  # (c, c) was followed by c
    mask = trigram_block_mask(generated, 4)
    assert mask.tolist() == [[False, False, False, True], [False, False, False, False],
                             [False, False, False, True]]
    assert not trigram_block_mask(torch.tensor([[A, B]]), 4).any()


def test_beam_search_finds_what_greedy_misses() -> None:
    rows = torch.zeros(1, dtype=torch.long)
    greedy = greedy_search(markov_step([BEAM_BEATS_GREEDY]), rows, batch_size=1, max_length=6)
    assert nonzero(greedy) == [[A]]
    assert run_beam([BEAM_BEATS_GREEDY], block=True) == [[B]]
    out = beam_search(markov_step([BEAM_BEATS_GREEDY]), torch.zeros(2, dtype=torch.long), batch_size=1,
                      beam_size=2, max_length=6, reorder=lambda s, i: s.index_select(0, i))
    assert out.scores.item() == pytest.approx(math.log(0.4 * 0.9), abs=1e-4)


def test_trigram_blocking_in_beam_and_greedy() -> None:
    # Unblocked: the alternation runs to max_length (0.9*0.9*0.8*0.9*0.8*0.9 = 0.336 beats "a b" + eos = 0.162).
    assert run_beam([ALTERNATING], block=False) == [[A, B, A, B, A, B]]
    # Blocked: after "a b a b" the token a would repeat "a b a"; "a b" + eos (0.162) beats "a b a b" + eos (0.117).
    assert run_beam([ALTERNATING], block=True) == [[A, B]]
    rows = torch.zeros(1, dtype=torch.long)
    assert nonzero(greedy_search(markov_step([ALTERNATING]), rows, batch_size=1, max_length=6,
                                 block_trigrams=False)) == [[A, B, A, B, A, B]]
    # Greedy with blocking: a b a b, then a is blocked and eos (0.2) is the best left.
    assert nonzero(greedy_search(markov_step([ALTERNATING]), rows, batch_size=1, max_length=6)) == [[A, B, A, B]]


def test_beam_search_is_batched_row_independently() -> None:
    together = run_beam([ALTERNATING, BEAM_BEATS_GREEDY, ALTERNATING], block=True, beam_size=3)
    alone = [run_beam([t], block=True, beam_size=3)[0] for t in (ALTERNATING, BEAM_BEATS_GREEDY, ALTERNATING)]
    assert together == alone == [[A, B], [B], [A, B]]


def test_model_generate_beam_and_greedy_shapes() -> None:
    model = tiny_model().eval()
    images = torch.randn(3, 2, 3, 64, 64)
    for beam in (1, 3):
        ids = model.generate(images, beam_size=beam, max_length=7)
        assert ids.shape[0] == 3 and ids.shape[1] <= 7
        assert ids.min() >= 0 and ids.max() <= 20


# ----------------------------------------------------------------------------- tokenizer


def test_cleaning_quirks() -> None:
    report = 'The heart is normal. A 3.5 cm nodule: x-ray #2 (left)! 1. Foo bar. 2. Baz.'
    assert clean_report_iu_xray(report) == "the heart is normal . a 35 cm nodule x-ray #2 left foo bar . baz ."
    assert clean_report_mimic_cxr("FINDINGS:\n  No  effusion___ seen..") == "findings no effusion seen ."
    # Upstream keeps empty sentences (its filter compares a string with []).
    assert clean_report_iu_xray("Normal. . Clear.") == "normal .  . clear ."


def test_tokenizer_on_real_iu_xray_reports(tmp_path: Path) -> None:
    annotation = shared_data("iu_xray", "r2gen_iu_xray_annotation.json")
    tokenizer = R2GenTokenizer.from_annotation(annotation, threshold=3, dataset_name="iu_xray")
    # R2Gen's IU X-Ray vocabulary: 760 words with threshold 3 (the released model's logit has 761 rows).
    assert tokenizer.vocab_size == 760
    assert tokenizer.idx2token == sorted(tokenizer.idx2token) and "<unk>" in tokenizer.idx2token
    data = json.loads(annotation.read_text())
    train = data["train"]
    known = 0
    for entry in train[:200]:
        ids = tokenizer.encode(entry["report"])
        assert ids[0] == 0 and ids[-1] == 0 and all(i > 0 for i in ids[1:-1])
        decoded = tokenizer.decode(ids[1:])
        cleaned = clean_report_iu_xray(entry["report"])
        if tokenizer.unk_id not in ids:
            known += 1
            assert decoded == " ".join(cleaned.split())
        assert len(decoded.split()) == len(cleaned.split())
    assert known > 150  # most training reports are fully in the vocabulary
    assert tokenizer.encode("zzzunseen") == [0, tokenizer.unk_id, tokenizer.token2idx["."], 0]
    tokenizer.save(tmp_path / "tokenizer.json")
    again = R2GenTokenizer.load(tmp_path / "tokenizer.json")
    assert again.idx2token == tokenizer.idx2token and again.dataset_name == "iu_xray"
    with pytest.raises(DataError, match="not an R2Gen tokenizer"):
        R2GenTokenizer.load(annotation)


# ----------------------------------------------------------------------------- official checkpoint layout


def test_full_size_model_has_the_official_state_dict_layout() -> None:
    official = json.loads(OFFICIAL_KEYS.read_text())["state_dict"]
    with torch.device("meta"):  # ResNet-101 + Transformer without allocating ~350 MB
        model = R2GenModel(R2GenConfig(dataset_name="mimic_cxr", vocab_size=760))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(official)
    expected = {k: [761 if d == "vocab+1" else d for d in shape] for k, shape in official.items()}
    assert ours == expected
    assert len(ours) == 848


def _official_layout_checkpoint(tmp_path: Path, *, data_parallel: bool = False) -> tuple[Path, Path, R2GenModel]:
    """A small checkpoint exactly as upstream's trainer saves one: epoch, state_dict,
    optimizer, monitor_best; no config and no vocabulary."""
    root = write_iu_dataset(tmp_path / "iu", n_train=6, n_val=1, n_test=1)
    tokenizer = R2GenTokenizer.from_annotation(root / "annotation.json", threshold=3, dataset_name="iu_xray")
    model = tiny_model(vocab_size=tokenizer.vocab_size, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), amsgrad=True)
    model(torch.randn(1, 2, 3, 64, 64), torch.tensor([[0, 1, 2, 0]])).sum().backward()
    optimizer.step()
    state = model.state_dict()
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "model_iu_xray.pth"
    torch.save({"epoch": 7, "state_dict": state, "optimizer": optimizer.state_dict(), "monitor_best": 0.17}, path)
    return path, root, model


@pytest.mark.parametrize("data_parallel", [False, True])
def test_official_layout_checkpoint_loads_strictly(tmp_path: Path, data_parallel: bool) -> None:
    path, root, original = _official_layout_checkpoint(tmp_path, data_parallel=data_parallel)
    plugin = R2GenPlugin(weights=str(path), tokenizer=str(root / "annotation.json"), dataset_name="iu_xray",
                         num_heads=4, rm_num_heads=4, image_size=64, device="cpu")
    plugin.setup(None)
    assert plugin.loaded is not None and plugin.loaded.kind == "official" and plugin.loaded.epoch == 7
    assert plugin.loaded.config.resnet_depth == 18 and plugin.loaded.config.d_model == 32
    loaded = plugin.loaded.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in original.state_dict().items())
    # The vocabulary must be the one the checkpoint was trained with: a different threshold fails clearly.
    wrong = R2GenPlugin(weights=str(path), tokenizer=str(root / "annotation.json"), dataset_name="iu_xray",
                        threshold=1, num_heads=4, rm_num_heads=4)
    with pytest.raises(DataError, match="threshold"):
        wrong.setup(None)
    without_vocabulary = R2GenPlugin(weights=str(path))
    with pytest.raises(MissingResourceError, match="annotation"):
        without_vocabulary.setup(None)


def test_plugin_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="weights=PATH"):
        R2GenPlugin()
    # checkpoint= is the deprecated alias of weights= (one name across plugins), with a warning
    with pytest.warns(DeprecationWarning, match="weights="):
        alias = R2GenPlugin(checkpoint=str(tmp_path / "x.pth"))
    assert alias.checkpoint == tmp_path / "x.pth"
    with pytest.raises(BoxmedError, match="disagree"), pytest.warns(DeprecationWarning):
        R2GenPlugin(checkpoint="a.pth", weights="b.pth")
    with pytest.raises(MissingResourceError, match="not found"):
        R2GenPlugin(weights=str(tmp_path / "missing.pth")).setup(None)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="weights-only"):
        R2GenPlugin(weights=str(bad)).setup(None)


# ----------------------------------------------------------------------------- training and generation


def test_train_resume_and_generate_through_the_cli(tmp_path: Path, registered: None) -> None:
    from boxmed_eval.cli import main

    assert get_model_class("r2gen") is R2GenPlugin
    out = tmp_path / "r2gen"
    args = ["train", "r2gen", "--dataset", "demo", "--out", str(out), "--train-limit", "8", "--val-limit", "2",
            "--batch-size", "4", "--image-size", "64", "--d-model", "32", "--d-ff", "32", "--num-layers", "1",
            "--num-heads", "4", "--resnet-depth", "18", "--resnet-width", "8", "--max-seq-length", "12",
            "--threshold", "1", "--beam-size", "2"]
    runner = CliRunner()
    first = runner.invoke(main, [*args, "--epochs", "1"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert (out / "model_best.pth").is_file() and (out / "tokenizer.json").is_file()
    second = runner.invoke(main, [*args, "--epochs", "2"], catch_exceptions=False)  # resumes at epoch 2
    assert second.exit_code == 0, second.output
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"] * 1.5 and math.isfinite(history[1]["val_bleu_4"])
    current = torch.load(out / "current_checkpoint.pth", weights_only=True)
    assert current["epoch"] == 2 and set(current) >= {"state_dict", "optimizer", "config", "tokenizer"}

    from boxmed_eval.datasets import get_dataset

    studies = get_dataset("demo").load("test")[:3]
    plugin = R2GenPlugin(weights=str(out / "model_best.pth"), beam_size=3)
    plugin.setup(None)
    predictions = plugin.generate(studies)
    assert [p.id for p in predictions] == [s.id for s in studies]
    vocabulary = set(plugin.loaded.tokenizer.idx2token)  # type: ignore[union-attr]
    assert all(set(p.report.split()) <= vocabulary for p in predictions)
    assert plugin.provenance()["checkpoint_kind"] == "boxmed"

    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["run", "--model", "r2gen", "--dataset", "demo", "--limit", "3", "--out",
                                  str(run_dir), "--metrics", "nlg", "--model-arg",
                                  f"weights={out / 'model_best.pth'}", "--model-arg", "beam_size=2"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "bleu_4" in json.loads((run_dir / "summary.json").read_text())


def test_demo_preset_fills_unset_options_and_monitors_chexpert_f1(tmp_path: Path, registered: None) -> None:
    from boxmed_eval.cli import main

    out = tmp_path / "r2gen-preset"
    args = ["train", "r2gen", "--dataset", "demo", "--preset", "demo", "--out", str(out), "--epochs", "1",
            "--train-limit", "4", "--val-limit", "2", "--image-size", "32", "--d-model", "32", "--d-ff", "32",
            "--num-layers", "1", "--resnet-width", "8", "--max-seq-length", "12", "--threshold", "1",
            "--beam-size", "1"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    training = json.loads((out / "config.json").read_text())["training"]
    # from the preset (not given on the command line) ...
    assert (training["resnet_depth"], training["lr_ve"], training["num_heads"]) == (18, 1e-3, 4)
    assert training["monitor"] == "chexpert_f1" and training["cache_images"] and training["validate_first"]
    # ... and the command line wins where both set a value
    assert (training["epochs"], training["image_size"], training["d_model"]) == (1, 32, 32)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1] and all("val_chexpert_f1" in h for h in history)
    assert "best validation chexpert_f1" in result.output
