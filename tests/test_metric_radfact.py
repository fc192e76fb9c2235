"""RadFact-style metrics: the spatial-entailment rule against RadFact's definition, hand-worked
scores, the LLM judge's prompt and parse (through a loopback OpenAI-compatible server), and the
laterality / anatomy consistency counts."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml
from PIL import Image

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.metrics import METRICS, compute_metrics
from boxmed_eval.metrics.consistency import check_box
from boxmed_eval.metrics.entailment import (best_match, entailment_messages, few_shot_turns,
                                            parse_entailment_reply, rules_verdict)
from boxmed_eval.metrics.radfact import (NormBox, box_mask, box_precision, grounded_report, normalise_box,
                                         spatially_entailed)
from boxmed_eval.records import Box, Prediction, Study

# ------------------------------------------------------------------------ spatial entailment


def _radfact_precision(pred: list[tuple], true: list[tuple], size: int = 224) -> float:
    """RadFact's box_metrics as its code writes it: corners * size cast to int, the mask
    indexed [x1:x2, y1:y2] (transposed, which does not change a pixel count)."""
    def mask(boxes):
        m = np.zeros((size, size), dtype=bool)
        for box in boxes:
            x1, y1, x2, y2 = (np.array(box) * size).astype(int)
            m[x1:x2, y1:y2] = True
        return m
    p, t = mask(pred), mask(true)
    return (p & t).sum() / p.sum() if p.sum() else float("nan")


def test_box_precision_equals_radfact_definition_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        def boxes(n):
            out = []
            for _ in range(n):
                x = np.sort(rng.uniform(0, 1, 2))
                y = np.sort(rng.uniform(0, 1, 2))
                out.append((x[0], y[0], x[1], y[1]))
            return out
        pred, true = boxes(rng.integers(1, 3)), boxes(rng.integers(1, 4))
        ours = box_precision([NormBox(*b) for b in pred], [NormBox(*b) for b in true])
        np.testing.assert_allclose(ours, _radfact_precision(pred, true), equal_nan=True)


def test_spatial_entailment_on_hand_made_boxes():
    # 0.1..0.3 -> mask cells 22..67 (45 x 45 = 2025); 0.2..0.4 -> 44..89: overlap 23 x 23 = 529
    a, b = NormBox(0.1, 0.1, 0.3, 0.3), NormBox(0.2, 0.2, 0.4, 0.4)
    assert box_precision([a], [b]) == pytest.approx(529 / 2025)
    assert not spatially_entailed([a], [b])
    # exactly half is not enough (RadFact compares with ">"): 112 x 56 box, evidence 56 x 56
    half = NormBox(0.0, 0.0, 0.5, 0.25)
    assert box_precision([half], [NormBox(0.0, 0.0, 0.25, 0.25)]) == 0.5
    assert not spatially_entailed([half], [NormBox(0.0, 0.0, 0.25, 0.25)])
    assert spatially_entailed([half], [NormBox(0.0, 0.0, 0.26, 0.25)])  # 58 / 112
    # the union of the evidence counts: two disjoint strips of 33 rows each of a 112 x 112 box
    box = NormBox(0.0, 0.0, 0.5, 0.5)
    strips = [NormBox(0.0, 0.0, 0.5, 0.15), NormBox(0.0, 0.25, 0.5, 0.4)]
    assert box_precision([box], strips[:1]) == pytest.approx(3696 / 12544)
    assert not spatially_entailed([box], strips[:1])
    assert spatially_entailed([box], strips)  # 7392 / 12544 = 0.589
    # no evidence box, or a box thinner than one mask cell (0 pixels), is never entailed
    assert not spatially_entailed([a], [])
    tiny = NormBox(0.1, 0.1, 0.102, 0.102)  # cells 22..22
    assert box_mask([tiny]).sum() == 0 and not spatially_entailed([tiny], [tiny])
    # a coarser mask changes the verdict: the rule lives on the mask, not on exact areas
    assert box_precision([a], [b], mask_size=10) == pytest.approx(1 / 4)  # cells 1..3 vs 2..4


def test_boxes_are_normalised_by_their_image_and_compared_per_image():
    box = Box(250, 100, 500, 300, image_width=1000, image_height=400)
    assert normalise_box(box) == NormBox(0.25, 0.25, 0.5, 0.75)
    with pytest.raises(DataError, match="image size"):
        normalise_box(Box(1, 1, 2, 2), where="study s1")
    assert normalise_box(Box(1, 1, 2, 2), (10, 10)) == NormBox(0.1, 0.1, 0.2, 0.2)
    # same place, another image of the study: no overlap
    assert box_precision([NormBox(0, 0, 0.5, 0.5, 1)], [NormBox(0, 0, 0.5, 0.5, 0)]) == 0.0


def test_boxes_attach_to_their_sentences():
    boxes = [Box(0, 0, 10, 10, phrase="left pleural effusion", image_width=100, image_height=100),
             Box(0, 0, 10, 10, phrase="Patchy right basilar opacity", image_width=100, image_height=100),
             Box(0, 0, 10, 10, phrase="", image_width=100, image_height=100)]
    text = "Small left pleural effusion. No pneumothorax."
    ref, unplaced = grounded_report(text, boxes, own_sentences_for_unplaced=True)
    assert [s.text for s in ref] == ["Small left pleural effusion.", "No pneumothorax.", "Patchy right basilar opacity"]
    assert [len(s.boxes) for s in ref] == [1, 0, 1] and unplaced == 1  # the phrase-less box
    cand, unplaced = grounded_report(text, boxes, own_sentences_for_unplaced=False)
    assert len(cand) == 2 and unplaced == 2
    # a phrase that is not verbatim goes to the sentence that entails it
    report = "There is patchy opacity at the left lung base. No pleural effusion."
    placed, unplaced = grounded_report(report, [Box(0, 0, 1, 1, phrase="Left basilar opacity", image_width=9,
                                                    image_height=9)], own_sentences_for_unplaced=True)
    assert [len(s.boxes) for s in placed] == [1, 0] and unplaced == 0


# ------------------------------------------------------------------------ hand-worked scores

REF_A = "Small left pleural effusion. No pneumothorax. Heart size is normal."
HYP_A = "Small left effusion. Mild cardiomegaly. No left pneumothorax."


def _hand_case():
    size = {"image_width": 1000, "image_height": 1000}
    studies = {
        "a": Study("a", [], REF_A, boxes=[Box(600, 500, 900, 800, phrase="Small left pleural effusion.", **size)]),
        "b": Study("b", [], "The lungs are clear."),
    }
    predictions = {
        "a": Prediction("a", HYP_A, boxes=[Box(650, 550, 950, 850, phrase="Small left effusion.", **size),
                                           Box(300, 400, 700, 800, phrase="Mild cardiomegaly.", **size)]),
        "b": Prediction("b", "The lungs are clear. Cardiomegaly."),
    }
    refs = {i: s.findings for i, s in studies.items()}
    hyps = {i: p.report for i, p in predictions.items()}
    return refs, hyps, studies, predictions


def test_radfact_scores_worked_by_hand():
    refs, hyps, studies, predictions = _hand_case()
    result = compute_metrics(["radfact"], refs, hyps, studies=studies, predictions=predictions)
    per = result.per_sample
    # study a, generated side: "Small left effusion." entailed by the reference's first sentence,
    # "Mild cardiomegaly." not, "No left pneumothorax." entailed by "No pneumothorax." -> 2/3.
    # Its boxed sentences: the effusion (entailed; box cells 145..212 x 123..190 = 67 x 67, inside
    # the evidence box 134..201 x 112..179 on 56 x 56 -> 3136 / 4489 = 0.699 > 0.5: spatially
    # entailed) and cardiomegaly (not entailed). Grounding 1/1, spatial 1/2.
    assert per["radfact_logical_precision"]["a"] == pytest.approx(2 / 3)
    assert per["radfact_grounding_precision"]["a"] == 1.0
    assert per["radfact_spatial_precision"]["a"] == 0.5
    # reference side: only the effusion is entailed ("No pneumothorax." is not entailed by
    # "No left pneumothorax.", nor the normal heart by cardiomegaly) -> 1/3; its box 3136/4489
    # inside the generated effusion box -> grounding 1/1, spatial 1/1.
    assert per["radfact_logical_recall"]["a"] == pytest.approx(1 / 3)
    assert per["radfact_grounding_recall"]["a"] == 1.0 and per["radfact_spatial_recall"]["a"] == 1.0
    # study b: no boxes; 1 of 2 generated sentences entailed, the reference's one entailed
    assert per["radfact_logical_precision"]["b"] == 0.5 and per["radfact_logical_recall"]["b"] == 1.0
    assert math.isnan(per["radfact_grounding_precision"]["b"]) and math.isnan(per["radfact_spatial_recall"]["b"])
    corpus = result.corpus
    assert corpus["radfact_logical_precision"] == pytest.approx(7 / 12)  # mean of 2/3 and 1/2
    assert corpus["radfact_logical_recall"] == pytest.approx(2 / 3)  # mean of 1/3 and 1
    assert corpus["radfact_logical_f1"] == pytest.approx(2 * (7 / 12) * (2 / 3) / (7 / 12 + 2 / 3))
    assert corpus["radfact_spatial_precision"] == 0.5  # NaN of study b ignored, as np.nanmean
    assert corpus["radfact_grounding_f1"] == 1.0 and corpus["radfact_spatial_f1"] == pytest.approx(2 / 3)
    assert corpus["radfact_judge_failures"] == 0.0 and corpus["radfact_samples"] == 2.0
    assert result.conventions["radfact_entailment"] == "rules"
    table = result.tables["radfact_sentences"]
    generated_a = table[(table["id"] == "a") & (table["report"] == "generated")]
    assert list(generated_a["status"]) == ["entailment", "not_entailment", "entailment"]
    assert list(generated_a["evidence"]) == ["1", "", "2"]  # sentence numbers in the reference
    assert list(generated_a["spatial"]) == ["spatial_entailment", "no_spatial_entailment", "no_boxes"]
    # no dataset named: reference text stays out of the table; a public dataset's is written
    assert set(table[table["report"] == "reference"]["text"]) == {""}
    public = compute_metrics(["radfact"], refs, hyps, studies=studies, predictions=predictions,
                             options={"radfact": {"dataset": "iu_xray"}}).tables["radfact_sentences"]
    assert public[public["report"] == "reference"]["text"].iloc[0] == "Small left pleural effusion."

    # a stricter threshold than the effusion box's 0.699 removes its spatial entailment
    strict = compute_metrics(["radfact"], refs, hyps, studies=studies, predictions=predictions,
                             options={"radfact": {"threshold": 0.7}})
    assert strict.per_sample["radfact_grounding_precision"]["a"] == 0.0
    assert strict.per_sample["radfact_spatial_recall"]["a"] == 0.0


def test_radfact_options_are_checked():
    with pytest.raises(BoxmedError, match="entailment"):
        METRICS.get("radfact")(entailment="bert")
    with pytest.raises(BoxmedError, match="failures"):
        METRICS.get("radfact")(failures="ignore")
    ok, reason = METRICS.get("radfact")(entailment="llm").available()
    assert not ok and "radfact.judge" in reason


# ------------------------------------------------------------------------ the LLM judge


def test_radfact_prompt_is_its_system_message_and_binary_few_shots():
    turns = few_shot_turns()
    assert len(turns) == 67  # 10 examples, every phrase of both reports
    first_query, first_reply = turns[0]
    assert yaml.safe_load(first_query) == {
        "reference": ["Heart size is normal.", "There is an interstitial infiltrate at the left lung base.",
                      "Abnormal increased interstitial markings in the right lower lung field.",
                      "Abnormal increased interstitial markings in the left mid lung."],
        "hypothesis": "A new right pleural effusion has developed right lower lung field."}
    assert first_query.startswith("reference:\n") and first_reply.startswith("phrase: ")
    assert {yaml.safe_load(r)["status"] for _, r in turns} == {"entailment", "not_entailment"}
    messages = entailment_messages(["No pneumothorax."], "No left pneumothorax.")
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("You are an AI radiology assistant")
    assert [m["role"] for m in messages[1:3]] == ["user", "assistant"] and len(messages) == 1 + 2 * 67 + 1
    assert yaml.safe_load(messages[-1]["content"]) == {"reference": ["No pneumothorax."],
                                                       "hypothesis": "No left pneumothorax."}


def test_parse_entailment_reply_follows_radfact_schema():
    premises = ["Small left pleural effusion.", "No pneumothorax."]
    good = "```yaml\nphrase: Left effusion.\nevidence:\n- Small left pleural effusion.\nstatus: entailment\n```"
    verdict = parse_entailment_reply(good, premises, "Left effusion.")
    assert verdict.entailed and verdict.evidence == [0] and not verdict.failed and verdict.valid_evidence
    plain = "phrase: Left effusion\nevidence: []\nstatus: neutral\n"  # no code block; rewritten phrase
    verdict = parse_entailment_reply(plain, premises, "Left effusion.")
    assert not verdict.entailed and not verdict.failed and verdict.rewritten
    for bad in ("I think it is entailed.", "phrase: x\nevidence: []\nstatus: entailment",  # entailed needs evidence
                "phrase: x\nevidence: [No pneumothorax.]\nstatus: neutral",  # neutral has none
                "phrase: x\nevidence: []\nstatus: contradiction", "phrase: x\nevidence: []\nstatus: maybe",
                "phrase: x\nstatus: entailment", "- a\n- b", "phrase: [unclosed"):
        assert parse_entailment_reply(bad, premises, "x").failed, bad
    # evidence that is not a premise (after normalisation) makes RadFact drop the study
    odd = "phrase: x\nevidence:\n- small LEFT pleural-effusion\nstatus: entailment"
    verdict = parse_entailment_reply(odd, premises, "x")
    assert verdict.entailed and not verdict.valid_evidence and verdict.evidence == [0]
    assert best_match("no  pneumothorax!", premises) == 1 and best_match("left pleural", premises) == 0


class _RadFactServer:
    """A loopback chat-completions server that answers RadFact queries from ``answer(hypothesis)``."""

    def __init__(self, answer) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "radfact-llm", "object": "model"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                server.requests.append(request)
                query = yaml.safe_load(request["messages"][-1]["content"])
                reply = answer(query["hypothesis"], query["reference"])
                self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _yaml_answer(hypothesis: str, evidence: list[str]) -> str:
    return yaml.dump({"phrase": hypothesis, "evidence": evidence,
                      "status": "entailment" if evidence else "not_entailment"}, sort_keys=False)


def test_llm_judge_end_to_end_counts_failures_and_caches(tmp_path):
    refs = {"s": "Small left pleural effusion. No pneumothorax."}
    hyps = {"s": "Left pleural effusion. GARBLED sentence. Cardiomegaly."}

    def answer(hypothesis: str, reference: list[str]) -> str:
        if "GARBLED" in hypothesis:
            return "Sorry, I cannot answer that."
        if hypothesis == "Left pleural effusion.":
            return "```yaml\n" + _yaml_answer(hypothesis, ["Small left pleural effusion."]) + "```"
        if hypothesis == "Small left pleural effusion.":
            return _yaml_answer(hypothesis, ["Left pleural effusion."])
        return _yaml_answer(hypothesis, [])

    with _RadFactServer(answer) as server:
        options = {"judge": server.url, "cache_dir": str(tmp_path), "dataset": "iu_xray"}
        result = compute_metrics(["radfact"], refs, hyps, options={"radfact": options})
        assert len(server.requests) == 5  # 3 generated + 2 reference sentences
        request = server.requests[0]
        assert request["temperature"] == 0.0 and request["max_tokens"] == 1024
        assert request["messages"][0]["role"] == "system" and len(request["messages"]) == 136
        # the failed call is not entailed (RadFact's rule) and counted
        assert result.per_sample["radfact_logical_precision"]["s"] == pytest.approx(1 / 3)
        assert result.per_sample["radfact_logical_recall"]["s"] == 0.5
        assert result.corpus["radfact_judge_failures"] == 1.0
        assert result.per_sample["radfact_judge_failures"]["s"] == 1.0
        assert any("could not be parsed" in m for m in result.messages)
        assert result.conventions["radfact_entailment"] == "llm"
        assert result.conventions["radfact_judge"] == "radfact-llm"
        # the named variant leaves the failed sentence out; replies come from the run's cache
        excluded = compute_metrics(["radfact"], refs, hyps, options={"radfact": {**options, "failures": "exclude"}})
        assert len(server.requests) == 5
        assert excluded.per_sample["radfact_logical_precision"]["s"] == 0.5
        assert excluded.corpus["radfact_judge_failures"] == 1.0


def test_llm_evidence_from_outside_the_report_drops_the_study(tmp_path):
    refs = {"s": "No pneumothorax.", "t": "No pneumothorax."}
    hyps = {"s": "No pneumothorax seen.", "t": "Clear lungs."}

    def answer(hypothesis: str, reference: list[str]) -> str:
        if hypothesis == "No pneumothorax seen.":
            return _yaml_answer(hypothesis, ["There is no pneumothorax on either side."])  # not a premise
        return _yaml_answer(hypothesis, [])

    with _RadFactServer(answer) as server:
        result = compute_metrics(["radfact"], refs, hyps,
                                 options={"radfact": {"judge": server.url, "cache_dir": str(tmp_path),
                                                      "dataset": "iu_xray"}})
    assert math.isnan(result.per_sample["radfact_logical_precision"]["s"])
    assert result.per_sample["radfact_logical_precision"]["t"] == 0.0
    assert result.corpus["radfact_invalid_samples"] == 1.0 and result.corpus["radfact_samples"] == 1.0
    assert result.corpus["radfact_logical_precision"] == 0.0  # study s is left out


def test_llm_judge_refuses_credentialed_data_on_a_remote_server():
    metric = METRICS.get("radfact")(judge="http://192.0.2.1:8000/v1", dataset="mimic_cxr")
    ok, reason = metric.available()
    assert not ok and "refusing to send" in reason


# ------------------------------------------------------------------------ laterality / anatomy


def test_laterality_and_anatomy_checks_by_hand():
    size = {"image_width": 1000, "image_height": 800}
    # left effusion on the image's right half (patient's left): fine
    ok = check_box(Box(600, 450, 900, 750, phrase="Small left pleural effusion.", **size))
    assert ok.side == "left" and ok.laterality_error is False and not ok.anatomy_error
    # the same sentence with its box on the image's left half (the patient's right)
    wrong_side = check_box(Box(100, 450, 400, 750, phrase="Small left pleural effusion.", **size))
    assert wrong_side.laterality_error is True
    # a right apical finding boxed at the bottom of the film: outside the right apical zone
    low = check_box(Box(100, 600, 400, 780, phrase="Right apical pneumothorax.", **size))
    assert low.regions == ("right apical zone",) and low.anatomy_error and low.laterality_error is False
    # bilateral and unsided sentences are not checked for laterality
    assert check_box(Box(100, 500, 900, 750, phrase="Bibasilar atelectasis.", **size)).laterality_error is None
    assert check_box(Box(300, 300, 700, 700, phrase="Cardiomegaly.", **size)).laterality_error is None
    assert check_box(Box(1, 1, 2, 2, phrase="", **size)) is None


def test_box_consistency_counts_per_report_and_rates():
    size = {"image_width": 1000, "image_height": 800}
    predictions = {
        "a": Prediction("a", "x", boxes=[Box(600, 450, 900, 750, phrase="Left pleural effusion.", **size),
                                         Box(100, 450, 400, 750, phrase="Left lower lobe opacity.", **size),
                                         Box(100, 600, 400, 780, phrase="Right apical pneumothorax.", **size)]),
        "b": Prediction("b", "y", boxes=[Box(300, 300, 700, 700, phrase="Cardiomegaly.", **size)]),
        "c": Prediction("c", "z"),
    }
    refs = {i: "r" for i in predictions}
    result = compute_metrics(["box_consistency"], refs, {i: p.report for i, p in predictions.items()},
                             predictions=predictions)
    # a: the left lower lobe box lies on the patient's right (a laterality error, and outside the
    # left lung's template: an anatomy error too); the right apical box sits low (anatomy)
    assert result.per_sample["laterality_errors"]["a"] == 1.0 and result.per_sample["anatomy_errors"]["a"] == 2.0
    assert result.per_sample["laterality_errors"]["b"] == 0.0
    assert math.isnan(result.per_sample["laterality_errors"]["c"])
    assert result.corpus["laterality_errors"] == 0.5  # 1 error over 2 grounded reports
    assert result.corpus["laterality_error_rate"] == pytest.approx(1 / 3)  # 3 sided boxes
    assert result.corpus["anatomy_error_rate"] == 0.5 and result.corpus["anatomy_checked_boxes"] == 4.0
    assert result.corpus["anatomy_errors"] == 1.0  # (2 + 0) / 2 grounded reports


def test_demo_reference_boxes_are_consistent():
    """The demo draws every finding where its sentence says: its own boxes must pass."""
    from boxmed_eval.datasets.base import get_dataset

    studies = get_dataset("demo", None).load("test")
    predictions = {s.id: Prediction(s.id, s.findings, boxes=s.boxes) for s in studies}
    refs = {s.id: s.findings for s in studies}
    result = compute_metrics(["box_consistency", "radfact"], refs, dict(refs), predictions=predictions,
                             studies={s.id: s for s in studies})
    audit = compute_metrics(["box_consistency"], refs, dict(refs), studies={s.id: s for s in studies},
                            options={"box_consistency": {"boxes": "reference"}})  # the same boxes, as references
    assert audit.corpus == {k: v for k, v in result.corpus.items() if k in audit.corpus}
    assert result.corpus["laterality_checked_boxes"] > 20
    assert result.corpus["laterality_error_rate"] == 0.0 and result.corpus["anatomy_error_rate"] == 0.0
    # a report scored against itself: every sentence and every box entailed
    for name in ("logical_precision", "logical_recall", "grounding_precision", "spatial_recall"):
        assert result.corpus[f"radfact_{name}"] == 1.0, name


def test_rules_verdict_evidence_is_every_supporting_sentence():
    premises = ["Small left pleural effusion.", "Heart size is normal.", "No pneumothorax."]
    verdict = rules_verdict(premises, "Left pleural effusion without pneumothorax.")
    assert verdict.entailed and verdict.evidence == [0, 2]
    assert not rules_verdict(premises, "Left pleural effusion and cardiomegaly.").entailed


def test_judge_flag_names_radfact_only_explicitly():
    from boxmed_eval.judges import configured_judge_metrics, judge_options_from_cli

    shared = judge_options_from_cli(["http://127.0.0.1:8000/v1"], ["served"])
    assert "radfact" not in shared and configured_judge_metrics(shared) == ["green", "gema"]
    named = judge_options_from_cli(["radfact=http://127.0.0.1:9000/v1"], ["served"], dataset="iu_xray")
    assert named["radfact"] == {"judge": "http://127.0.0.1:9000/v1", "judge_model": "served", "dataset": "iu_xray"}
    assert "judge" not in named["green"]
    assert configured_judge_metrics(named) == ["radfact"]
    assert METRICS.get("radfact")(**named["radfact"]).entailment == "llm"


def test_messages_prompt_format_reaches_both_backends():
    from boxmed_eval.judges.base import GenerationSettings
    from boxmed_eval.judges.hf import render_prompt
    from boxmed_eval.judges.openai import OpenAIJudge

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    prompt = json.dumps(messages)

    class Tokenizer:
        chat_template = "x"

        def apply_chat_template(self, conversation, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "|".join(f"{m['role']}:{m['content']}" for m in conversation) + "|assistant:"

    assert render_prompt(prompt, "messages", Tokenizer()) == "system:S|user:Q|assistant:"
    assert render_prompt(prompt, "messages", None).endswith("assistant:")
    judge = OpenAIJudge.__new__(OpenAIJudge)  # no connection: only the request body is built
    judge.model, judge.api = "m", "chat"
    path, body = judge._body(prompt, GenerationSettings(prompt_format="messages"))
    assert path == "/chat/completions" and body["messages"] == messages


def test_reports_without_boxes_get_only_the_logical_numbers():
    result = compute_metrics(["radfact"], {"a": "No pneumothorax."}, {"a": "No pneumothorax. Cardiomegaly."})
    assert result.corpus["radfact_logical_precision"] == 0.5 and result.corpus["radfact_logical_recall"] == 1.0
    assert not [k for k in list(result.corpus) + list(result.per_sample) if "spatial" in k or "grounding" in k]
    assert any("no sentence has boxes" in m for m in result.messages)


def test_llm_judge_through_a_local_model_counts_every_failed_reply(tmp_path, monkeypatch):
    """The messages prompt through the transformers backend (a tiny random Llama with a chat
    template): its replies are noise, so every call fails and is counted, scored not entailed."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    import boxmed_eval.metrics.entailment as entailment
    from boxmed_eval.judges.hf import render_prompt

    data = json.loads(entailment.FEW_SHOT_FILE.read_text(encoding="utf-8"))
    short = {"system_message": data["system_message"], "examples": data["examples"][:1]}  # a short prompt for CPU
    monkeypatch.setattr(entailment, "_few_shot_data", lambda: short)

    folder = tmp_path / "tiny"
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([data["system_message"], "reference hypothesis phrase evidence status"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                 max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=3)).save_pretrained(folder)

    prompt = entailment.entailment_prompt(["No pneumothorax."], "No left pneumothorax.")
    rendered = render_prompt(prompt, "messages", AutoTokenizer.from_pretrained(folder))
    assert rendered.startswith("<|system|>You are an AI radiology assistant") and rendered.endswith("<|assistant|>")
    refs, hyps = {"s": "No pneumothorax."}, {"s": "No left pneumothorax. Cardiomegaly."}
    options = {"judge": str(folder), "cache_dir": str(tmp_path), "max_new_tokens": 4, "dataset": "iu_xray"}
    result = compute_metrics(["radfact"], refs, hyps, options={"radfact": options})
    assert result.corpus["radfact_judge_failures"] == 3.0  # 2 generated + 1 reference sentence
    assert result.corpus["radfact_logical_precision"] == 0.0 and result.corpus["radfact_logical_recall"] == 0.0
    assert (tmp_path / "judge_cache.jsonl").read_text().count("\n") == 3


def test_rules_judge_agrees_with_radfacts_own_labelled_examples():
    """RadFact's 67 few-shot phrase judgements (written by its authors, binarised) are an
    outside check of the deterministic judge: 64 agree when this test was written (the three
    misses are a persistence, an infiltrate-vs-markings and an opacity-vs-consolidation call;
    README)."""
    from boxmed_eval.metrics.entailment import few_shot_agreement

    agree, total = few_shot_agreement()
    assert total == 67 and agree >= 61


def test_radfact_on_an_ms_cxr_format_fixture(tmp_path):
    """The MS-CXR adapter's studies (findings = the phrases as sentences, boxes in pixels of
    400 x 500 images) against predictions worked out by hand."""
    from boxmed_eval.datasets import get_dataset
    from tests.test_dataset_ms_cxr import DICOM_A, MS_CXR_CSV_NAME, PATH_A, ROWS, write_csv

    root = tmp_path / "mimic-cxr-jpg"
    (root / PATH_A).parent.mkdir(parents=True)
    Image.new("L", (400, 500), 90).save(root / PATH_A, format="JPEG")
    write_csv(root / MS_CXR_CSV_NAME, [row for row in ROWS if row[0] == DICOM_A])
    study = next(s for s in get_dataset("ms_cxr", root).load("test") if s.id == DICOM_A)
    assert study.findings == "Small left pleural effusion. Bilateral opacities."
    size = {"image_width": 400, "image_height": 500}
    prediction = Prediction(DICOM_A, "Small left pleural effusion. Bilateral opacities. No pneumothorax.", boxes=[
        Box(200, 300, 280, 360, phrase="Small left pleural effusion.", **size),  # the reference box
        Box(250, 110, 370, 250, phrase="Bilateral opacities.", **size)])  # one of the two reference boxes
    args = ({DICOM_A: study.findings}, {DICOM_A: prediction.report})
    kwargs = {"studies": {DICOM_A: study}, "predictions": {DICOM_A: prediction}}
    per = compute_metrics(["radfact"], *args, **kwargs).per_sample
    # generated: 2 of 3 entailed (nothing about pneumothorax in the reference); both boxes lie
    # inside their evidence boxes -> grounding 1, spatial 2/2
    assert per["radfact_logical_precision"][DICOM_A] == pytest.approx(2 / 3)
    assert per["radfact_grounding_precision"][DICOM_A] == 1.0 and per["radfact_spatial_precision"][DICOM_A] == 1.0
    # reference: both entailed. The two opacity boxes on the 224 mask: x 20..120 -> cells 11..67,
    # y 100..250 -> 44..112 (56 x 68 = 3808); x 250..370 -> 140..207, y 110..250 -> 49..112
    # (67 x 63 = 4221); only the second is under the predicted box: 4221 / 8029 = 0.526 > 0.5
    assert per["radfact_logical_recall"][DICOM_A] == 1.0 and per["radfact_spatial_recall"][DICOM_A] == 1.0
    strict = compute_metrics(["radfact"], *args, **kwargs, options={"radfact": {"threshold": 0.53}}).per_sample
    assert strict["radfact_grounding_recall"][DICOM_A] == 0.5  # 0.526 no longer passes
    assert strict["radfact_grounding_precision"][DICOM_A] == 1.0  # the generated side is unchanged
