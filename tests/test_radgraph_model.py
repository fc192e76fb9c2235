"""boxmed-eval's own RadGraph (DyGIE++) inference: a tiny random BERT + random heads saved in the
radgraph package's archive layout (allennlp config.json, vocabulary/, weights.th with the
package's key names written out here by hand), loaded strictly; the decoding rules on hand-made
logits (values worked out from the package's dygie ner.py / relation.py / utils.get_entity); and
the whole inference compared with a naive one-span-at-a-time re-computation from the raw state dict."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from boxmed_eval.errors import BoxmedError  # noqa: E402
from boxmed_eval.metrics import METRICS, compute_metrics  # noqa: E402
from boxmed_eval.metrics.radgraph_model import (  # noqa: E402
    RadGraphInference, decode_ner, decode_relations, enumerate_spans, prune, split_words, to_annotation)

WORDS = ["mild", "cardiomegaly", "no", "pleural", "effusion", "left", "lung", "is", "clear", "heart", "size",
         "normal", "opacity", "base", "none", "of", "with", "and", "small", "right", ".", ",", "(", ")", "/",
         "card", "##io", "##megaly", "pneumo", "##thorax"]
NER = ["", "ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA"]
REL = ["suggestive_of", "located_at", "modify"]
HIDDEN, FEATURE, FF, LAYERS, WIDTH = 16, 4, 6, 2, 3
SPAN = 2 * HIDDEN + FEATURE


def _ff_keys(prefix: str, input_dim: int) -> dict[str, tuple[int, ...]]:
    dims = [input_dim] + [FF] * LAYERS
    keys = {}
    for i in range(LAYERS):
        keys[f"{prefix}._linear_layers.{i}.weight"] = (dims[i + 1], dims[i])
        keys[f"{prefix}._linear_layers.{i}.bias"] = (dims[i + 1],)
    return keys


def head_shapes(dataset: str = "radgraph") -> dict[str, tuple[int, ...]]:
    """The DyGIE key names and shapes of radgraph's weights.th (besides the BERT ones)."""
    ner, rel = f"{dataset}__ner_labels", f"{dataset}__relation_labels"
    shapes = {"_endpoint_span_extractor._span_width_embedding.weight": (WIDTH, FEATURE)}
    shapes.update(_ff_keys(f"_ner._ner_scorers.{ner}.0._module", SPAN))
    shapes.update({f"_ner._ner_scorers.{ner}.1._module.weight": (len(NER) - 1, FF),
                   f"_ner._ner_scorers.{ner}.1._module.bias": (len(NER) - 1,)})
    shapes.update(_ff_keys(f"_relation._mention_pruners.{rel}._scorer.0._module", SPAN))
    shapes.update({f"_relation._mention_pruners.{rel}._scorer.1._module.weight": (1, FF),
                   f"_relation._mention_pruners.{rel}._scorer.1._module.bias": (1,)})
    shapes.update(_ff_keys(f"_relation._relation_feedforwards.{rel}", 3 * SPAN))
    shapes.update({f"_relation._relation_scorers.{rel}.weight": (len(REL), FF),
                   f"_relation._relation_scorers.{rel}.bias": (len(REL),)})
    # the coreference module DyGIE always builds (unused at inference)
    shapes["_coref._distance_embedding.weight"] = (10, FEATURE)
    shapes.update(_ff_keys("_coref._antecedent_feedforward._module", 3 * SPAN + FEATURE))
    shapes.update(_ff_keys("_coref._mention_pruner._scorer.0._module", SPAN))
    shapes.update({"_coref._mention_pruner._scorer.1._module.weight": (1, FF),
                   "_coref._mention_pruner._scorer.1._module.bias": (1,),
                   "_coref._antecedent_scorer._module.weight": (1, FF), "_coref._antecedent_scorer._module.bias": (1,),
                   "_coref._f_network._linear_layers.0.weight": (SPAN, 2 * SPAN),
                   "_coref._f_network._linear_layers.0.bias": (SPAN,)})
    return shapes


def write_archive(folder: Path, bert_dir: Path, max_length: int = 512, seed: int = 0,
                  dataset: str = "radgraph") -> dict[str, torch.Tensor]:
    from transformers import AutoConfig, AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    bert = AutoModel.from_config(AutoConfig.from_pretrained(str(bert_dir)))  # what the package's AutoModel builds
    state = {"_embedder.token_embedder_bert._matched_embedder.transformer_model." + k: v
             for k, v in bert.state_dict().items()}
    for key, shape in head_shapes(dataset).items():
        state[key] = torch.randn(shape) * (0.3 if key.endswith("bias") else 1.0)
    torch.save(state, folder / "weights.th")
    bert_cfg = {"type": "pretrained_transformer_mismatched", "model_name": "tiny-bert", "max_length": max_length}
    config = {
        "dataset_reader": {"type": "dygie", "max_span_width": WIDTH, "token_indexers": {"bert": bert_cfg}},
        "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": bert_cfg}}, "feature_size": FEATURE,
                  "max_span_width": WIDTH, "target_task": "relation",
                  "feedforward_params": {"num_layers": LAYERS, "hidden_dims": FF, "dropout": 0.4},
                  "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
                  "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0}, "ner": {},
                              "relation": {"spans_per_word": 0.5},
                              "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                         "loss_weights": {"trigger": 0.2, "arguments": 1.0}}},
                  "initializer": {}, "module_initializer": {}}}
    (folder / "config.json").write_text(json.dumps(config))
    vocab = folder / "vocabulary"
    vocab.mkdir(exist_ok=True)
    (vocab / "non_padded_namespaces.txt").write_text("*tags\n*labels\n")
    (vocab / f"{dataset}__ner_labels.txt").write_text("\n".join(NER) + "\n")  # first line empty: the null label
    (vocab / f"{dataset}__relation_labels.txt").write_text("\n".join(REL) + "\n")
    return state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from transformers import BertConfig, BertTokenizer

    root = tmp_path_factory.mktemp("radgraph")
    bert_dir = root / "tiny-bert"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # (BertTokenizerFast(vocab_file=...) reads no vocabulary on transformers 5: every word would be [UNK])
    BertTokenizer.from_pretrained(str(bert_dir), do_lower_case=True).save_pretrained(bert_dir)
    BertConfig(vocab_size=5 + len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64).save_pretrained(bert_dir)
    state = write_archive(root / "radgraph", bert_dir)
    return root / "radgraph", bert_dir, state


# ------------------------------------------------------------------ a naive re-computation


def naive_annotate(state: dict, bert_dir: Path, report: str, max_length: int = 512,
                   model_type: str = "radgraph") -> dict:
    """One report, one span and one pair at a time, from the raw weights.th keys."""
    from transformers import AutoConfig, AutoModel, BertTokenizer

    prefix = "_embedder.token_embedder_bert._matched_embedder.transformer_model."
    bert = AutoModel.from_config(AutoConfig.from_pretrained(str(bert_dir)))
    bert.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    bert.eval()
    tok = BertTokenizer.from_pretrained(str(bert_dir))
    assert tok.unk_token_id not in tok("mild cardiomegaly")["input_ids"]
    words = split_words(report or "None", model_type)
    pieces, owner = [], []
    for w, word in enumerate(words):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        pieces += ids
        owner += [w] * len(ids)
    chunk = max_length - 2
    states = []
    with torch.no_grad():
        for s in range(0, len(pieces), chunk):
            ids = [tok.cls_token_id, *pieces[s:s + chunk], tok.sep_token_id]
            states.append(bert(torch.tensor([ids])).last_hidden_state[0, 1:-1])
    states = torch.cat(states)
    vec = [states[[i for i, o in enumerate(owner) if o == w]].mean(0) for w in range(len(words))]

    def ff(x: torch.Tensor, name: str) -> torch.Tensor:
        for i in range(LAYERS):
            x = torch.relu(x @ state[f"{name}._linear_layers.{i}.weight"].T + state[f"{name}._linear_layers.{i}.bias"])
        return x

    ner_ns, rel_ns = f"{model_type}__ner_labels", f"{model_type}__relation_labels"
    spans = [(s, e) for s in range(len(words)) for e in range(s, min(s + WIDTH, len(words)))]
    emb = {sp: torch.cat([vec[sp[0]], vec[sp[1]],
                          state["_endpoint_span_extractor._span_width_embedding.weight"][sp[1] - sp[0]]])
           for sp in spans}
    ner = []
    for sp in spans:
        h = ff(emb[sp], f"_ner._ner_scorers.{ner_ns}.0._module")
        logits = [0.0] + (h @ state[f"_ner._ner_scorers.{ner_ns}.1._module.weight"].T
                          + state[f"_ner._ner_scorers.{ner_ns}.1._module.bias"]).tolist()
        best = max(range(len(logits)), key=lambda k: logits[k])
        if best:
            ner.append([sp[0], sp[1], NER[best]])
    mention = {}
    for sp in spans:
        h = ff(emb[sp], f"_relation._mention_pruners.{rel_ns}._scorer.0._module")
        mention[sp] = float(h @ state[f"_relation._mention_pruners.{rel_ns}._scorer.1._module.weight"][0]
                            + state[f"_relation._mention_pruners.{rel_ns}._scorer.1._module.bias"][0])
    keep = math.ceil(len(words) * 0.5)
    kept = sorted(sorted(spans, key=lambda sp: -mention[sp])[:keep], key=spans.index)
    relations = []
    for a in kept:
        for b in kept:
            h = ff(torch.cat([emb[a], emb[b], emb[a] * emb[b]]), f"_relation._relation_feedforwards.{rel_ns}")
            logits = (h @ state[f"_relation._relation_scorers.{rel_ns}.weight"].T
                      + state[f"_relation._relation_scorers.{rel_ns}.bias"]) + mention[a] + mention[b]
            logits = [0.0] + logits.tolist()
            best = max(range(len(logits)), key=lambda k: logits[k])
            if best:
                relations.append([a[0], a[1], b[0], b[1], REL[best - 1]])
    entities = {}
    for idx, (s, e, label) in enumerate(ner):
        rels = [[r[4], str([n[:2] for n in ner].index([r[2], r[3]]) + 1)] for r in relations
                if r[:2] == [s, e] and [r[2], r[3]] in [n[:2] for n in ner]]
        entities[str(idx + 1)] = {"tokens": " ".join(words[s:e + 1]), "label": label, "start_ix": s, "end_ix": e,
                                  "relations": rels}
    return {"text": " ".join(words), "entities": entities, "data_source": None, "data_split": "inference"}


REPORTS = ["Mild cardiomegaly. No pleural effusion.", "The left lung is clear, heart size normal (small opacity).",
           "", "cardiomegaly pneumothorax and right base opacity / effusion"]


# ------------------------------------------------------------------ word splitting, spans, decoding


def test_split_words_as_the_package() -> None:
    # radgraph: spaces around / , : . ! ? ( ) -- not around '-' (',-,' in the package's class is a range)
    assert split_words("Mild cardiomegaly.No effusion/edema (left), well-defined!", "radgraph") == [
        "Mild", "cardiomegaly", ".", "No", "effusion", "/", "edema", "(", "left", ")", ",", "well-defined", "!"]
    # xl: wordpunct (\w+|[^\w\s]+), then ")." "%)" ... split
    assert split_words("pre-existing opacity (5%).\nok", "radgraph-xl") == [
        "pre", "-", "existing", "opacity", "(", "5", "%", ")", ".", "ok"]
    assert split_words("a\\nb", "modern-radgraph-xl") == ["a", "b"]  # the literal backslash-n of some corpora


def test_enumerate_spans_order() -> None:
    assert enumerate_spans(3, 2) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]


def test_decode_ner_hand_made() -> None:
    scores = torch.tensor([[-1.0, -2.0, -1.0, -3.0],  # all below the null 0 -> no entity
                           [2.0, 0.5, -1.0, 0.0],  # ANAT-DP (index 1)
                           [0.0, 0.0, 3.0, 1.0]])  # OBS-U
    out = decode_ner(scores, [(0, 0), (0, 1), (1, 1)], NER)
    soft = math.exp(2.0) / (1 + math.exp(2.0) + math.exp(0.5) + math.exp(-1.0) + 1)
    assert out == [[0, 1, "ANAT-DP", 2.0, round(soft, 4)],
                   [1, 1, "OBS-U", 3.0, round(math.exp(3) / (3 + math.exp(3) + math.e), 4)]]


def test_prune_keeps_ceil_half_in_order() -> None:
    # 3 words, spans_per_word 0.5 -> ceil(1.5) = 2 best spans, returned in span order
    assert prune(torch.tensor([0.1, 0.9, 0.5, 0.8]), 3, 0.5) == [1, 3]
    assert prune(torch.tensor([0.1, -0.2]), 1, 0.5) == [0]  # at least one


def test_decode_relations_and_entities_hand_made() -> None:
    kept = [(0, 0), (1, 1), (2, 3)]
    scores = torch.full((3, 3, 3), -5.0)
    scores[0, 1] = torch.tensor([-1.0, -1.0, 2.0])  # (0,0) modify (1,1)
    scores[2, 1] = torch.tensor([0.5, 1.5, 0.0])  # (2,3) located_at (1,1)
    scores[1, 1] = torch.tensor([4.0, 0.0, 0.0])  # a self pair: the package keeps it
    scores[1, 2] = torch.tensor([3.0, 0.0, 0.0])  # (1,1) suggestive_of (2,3): (2,3) is no entity -> dropped
    rels = decode_relations(scores, kept, REL)
    assert [r[:5] for r in rels] == [[0, 0, 1, 1, "modify"], [1, 1, 1, 1, "suggestive_of"],
                                     [1, 1, 2, 3, "suggestive_of"], [2, 3, 1, 1, "located_at"]]
    assert rels[0][5] == 2.0 and rels[0][6] == round(math.exp(2) / (1 + 2 * math.exp(-1) + math.exp(2)), 4)
    words = ["mild", "cardiomegaly", "left", "base"]
    ann = to_annotation(words, [[0, 0, "OBS-DP", 1.0, 0.5], [1, 1, "OBS-DP", 1.0, 0.5]], rels)
    assert ann["entities"] == {
        "1": {"tokens": "mild", "label": "OBS-DP", "start_ix": 0, "end_ix": 0, "relations": [["modify", "2"]]},
        "2": {"tokens": "cardiomegaly", "label": "OBS-DP", "start_ix": 1, "end_ix": 1,
              "relations": [["suggestive_of", "2"]]}}
    assert ann["text"] == "mild cardiomegaly left base" and ann["data_split"] == "inference"


# ------------------------------------------------------------------ loading


def test_missing_and_unexpected_keys_are_named(tiny, tmp_path: Path) -> None:
    folder, bert_dir, state = tiny
    broken = tmp_path / "broken"
    write_archive(broken, bert_dir)
    weights = torch.load(broken / "weights.th", weights_only=True)
    del weights["_relation._relation_scorers.radgraph__relation_labels.bias"]
    torch.save(weights, broken / "weights.th")
    with pytest.raises(BoxmedError, match=r"missing 1: \['_relation\._relation_scorers\.radgraph__relation_labels\.bias'\]"):
        RadGraphInference(broken, "radgraph", bert_dir, device="cpu")
    weights["_relation._relation_scorers.radgraph__relation_labels.bias"] = torch.zeros(len(REL))
    weights["_ner.extra.weight"] = torch.zeros(1)
    torch.save(weights, broken / "weights.th")
    with pytest.raises(BoxmedError, match=r"unexpected 1: \['_ner\.extra\.weight'\]"):
        RadGraphInference(broken, "radgraph", bert_dir, device="cpu")
    del weights["_coref._distance_embedding.weight"], weights["_ner.extra.weight"]  # unused, but the package needs it
    torch.save(weights, broken / "weights.th")
    with pytest.raises(BoxmedError, match="_coref._distance_embedding.weight"):
        RadGraphInference(broken, "radgraph", bert_dir, device="cpu")
    weights["_coref._distance_embedding.weight"] = torch.zeros(10, FEATURE)
    # transformers < 4.31 saved BERT's position_ids buffer with the weights: accepted, not needed
    weights["_embedder.token_embedder_bert._matched_embedder.transformer_model.embeddings.position_ids"] = \
        torch.arange(64).unsqueeze(0)
    torch.save(weights, broken / "weights.th")
    RadGraphInference(broken, "radgraph", bert_dir, device="cpu")
    weights["_ner._ner_scorers.radgraph__ner_labels.1._module.bias"] = torch.zeros(7)  # wrong label count
    torch.save(weights, broken / "weights.th")
    with pytest.raises(BoxmedError, match="size mismatch"):
        RadGraphInference(broken, "radgraph", bert_dir, device="cpu")
    with pytest.raises(BoxmedError, match="radgraph-xl__ner_labels"):  # the type names the vocabulary namespace
        RadGraphInference(folder, "radgraph-xl", bert_dir, device="cpu")
    xl = RadGraphInference(folder, "radgraph-xl", bert_dir, device="cpu", dataset="radgraph")  # namespaces named
    assert xl.archive.ner_labels == NER and split_words("a(b)", "radgraph-xl") == ["a", "(", "b", ")"]


def test_pickled_objects_are_refused(tiny, tmp_path: Path) -> None:
    folder, bert_dir, _ = tiny
    bad = tmp_path / "bad"
    write_archive(bad, bert_dir)
    torch.save({"x": object()}, bad / "weights.th")  # not loadable with weights_only=True
    with pytest.raises(BoxmedError, match="cannot load the RadGraph weights"):
        RadGraphInference(bad, "radgraph", bert_dir, device="cpu")


# ------------------------------------------------------------------ inference


def test_inference_equals_naive_recomputation(tiny) -> None:
    folder, bert_dir, state = tiny
    got = RadGraphInference(folder, "radgraph", bert_dir, device="cpu", batch_size=3)(REPORTS)
    for report, annotation in zip(REPORTS, got):
        assert annotation == naive_annotate(state, bert_dir, report), report
    assert got[2]["text"] == "None"  # an empty report is read as "None"
    blank = RadGraphInference(folder, "radgraph", bert_dir, device="cpu")(["  \n ", REPORTS[0]])
    assert blank[0]["entities"] == {} and blank[1] == got[0]  # white space only: no words, no entities
    assert sum(len(a["entities"]) for a in got) > 5  # random heads: something is found
    assert any(e["relations"] for a in got for e in a["entities"].values())
    one = RadGraphInference(folder, "radgraph", bert_dir, device="cpu", batch_size=1)(REPORTS)
    assert [a["entities"] for a in one] == [a["entities"] for a in got]  # batching changes nothing


def test_long_reports_are_folded(tiny, tmp_path: Path) -> None:
    _, bert_dir, _ = tiny
    folder = tmp_path / "short"
    state = write_archive(folder, bert_dir, max_length=6, seed=1)  # 4 word pieces per segment
    report = "cardiomegaly pneumothorax, left lung is clear. heart size normal"  # 14 pieces
    got = RadGraphInference(folder, "radgraph", bert_dir, device="cpu")([report])[0]
    assert got["entities"] == naive_annotate(state, bert_dir, report, max_length=6)["entities"]


def test_modernbert_encoder(tmp_path: Path) -> None:
    """modern-radgraph-xl: a ModernBERT encoder (the package builds whatever AutoModel names)."""
    from transformers import BertTokenizer, ModernBertConfig

    enc = tmp_path / "modernbert"
    enc.mkdir()
    (enc / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer.from_pretrained(str(enc), do_lower_case=True).save_pretrained(enc)
    ModernBertConfig(vocab_size=5 + len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, pad_token_id=0, cls_token_id=2, sep_token_id=3,
                     bos_token_id=2, eos_token_id=3).save_pretrained(enc)
    folder = tmp_path / "modern-radgraph-xl"
    state = write_archive(folder, enc, dataset="modern-radgraph-xl", seed=2)
    got = RadGraphInference(folder, "modern-radgraph-xl", enc, device="cpu", batch_size=2)(REPORTS)
    for report, annotation in zip(REPORTS, got):
        assert annotation == naive_annotate(state, enc, report, model_type="modern-radgraph-xl"), report
    assert sum(len(a["entities"]) for a in got) > 5


def test_metric_end_to_end_from_archive(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, bert_dir, state = tiny
    monkeypatch.delenv("BOXMED_RADGRAPH_MODEL", raising=False)
    monkeypatch.setenv("BOXMED_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "radgraph.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # the package's archive: files at the top level
        for path in folder.rglob("*"):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    refs = {"a": REPORTS[0], "b": REPORTS[1], "c": REPORTS[3], "d": "No effusion."}
    hyps = {"a": REPORTS[0], "b": "The left lung is clear.", "c": REPORTS[1], "d": ""}
    options = {"radgraph": {"model": str(archive), "bert": str(bert_dir), "device": "cpu"}}
    result = compute_metrics(["radgraph"], refs, hyps, options=options)
    assert not result.messages
    for variant in ("simple", "partial", "complete", "combined"):
        per = result.per_sample[f"radgraph_{variant}"]
        assert set(per) == set(refs)
        assert per["a"] == 1.0  # the same report
        assert per["d"] == 0.0  # an empty hypothesis
        assert 0.0 <= min(per.values()) and max(per.values()) <= 1.0
        assert result.corpus[f"radgraph_{variant}"] == pytest.approx(sum(per.values()) / 4)
    assert result.per_sample["radgraph_simple"]["b"] < 1.0
    assert result.conventions["radgraph"]["model_type"] == "radgraph"
    extracted = list((tmp_path / "cache" / "radgraph").iterdir())
    assert len(extracted) == 1 and (extracted[0] / "weights.th").is_file()  # extracted once, then reused
    again = compute_metrics(["radgraph"], refs, hyps, options=options)
    assert again.per_sample == result.per_sample and list((tmp_path / "cache" / "radgraph").iterdir()) == extracted


def test_without_weights_says_what_to_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny) -> None:
    monkeypatch.delenv("BOXMED_RADGRAPH_MODEL", raising=False)
    monkeypatch.delenv("BOXMED_RADGRAPH_BERT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = METRICS.get("radgraph")().available()
    assert not ok and "--metric-option radgraph.model=PATH" in reason and "BOXMED_RADGRAPH_MODEL" in reason
    ok, reason = METRICS.get("radgraph")(model=str(tmp_path)).available()
    assert not ok and "weights.th" in reason and "radgraph.model=PATH" in reason
    folder, _, _ = tiny
    ok, reason = METRICS.get("radgraph")(model=str(folder)).available()  # weights but no encoder
    assert not ok and "--metric-option radgraph.bert=DIR" in reason and "tiny-bert" in reason
    result = compute_metrics(["radgraph", "chexpert"], {"a": "No effusion."}, {"a": "Effusion."})
    assert "chexpert_f1" in result.corpus and not any(k.startswith("radgraph") for k in result.corpus)
    assert any("radgraph.model=PATH" in m for m in result.messages)


def test_real_checkpoint_equals_cxr_report_metric() -> None:
    """With the real RadGraph archive (env BOXMED_RADGRAPH_MODEL, encoder BOXMED_RADGRAPH_BERT or the
    HF cache), radgraph_combined of the 590 real MoERad IU X-Ray reports against CXR-Report-Metric's
    own column. Expected equal; 1% slack for argmax ties that padding/float order may flip."""
    import os

    import numpy as np
    import pandas as pd

    from tests.conftest import shared_data

    if not os.environ.get("BOXMED_RADGRAPH_MODEL"):
        pytest.skip("set BOXMED_RADGRAPH_MODEL (radgraph.tar.gz or its folder) to run on the real checkpoint")
    root = shared_data("generated_reports", "moerad_iu_xray")
    gts, preds = pd.read_csv(root / "gts.csv"), pd.read_csv(root / "preds.csv")
    scores = pd.read_csv(root / "report_scores.csv")
    refs = {str(i): str(t) for i, t in enumerate(gts["report"])}
    hyps = {str(i): str(t) for i, t in enumerate(preds["report"])}
    result = compute_metrics(["radgraph"], refs, hyps, options={"radgraph": {"variant": "combined"}})
    assert not result.messages, result.messages
    ours = np.array([result.per_sample["radgraph_combined"][str(i)] for i in range(len(refs))])
    same = np.isclose(ours, scores["radgraph_combined"].to_numpy(), rtol=0, atol=1e-9)
    print(f"radgraph_combined equal on {same.sum()}/{len(same)}; differing: {np.flatnonzero(~same)[:20]}")
    assert same.mean() >= 0.99
