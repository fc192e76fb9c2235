"""Chains per finding (issue 10 part 4): one chain per mention, the region nearest to it,
expert finding -> disease mappings with intermediate concepts, negations.

The sentences below are real IU X-Ray findings sentences (``indiana_reports.csv``, uid
given; "XXXX" is the dataset's own anonymisation), with chains checked by hand against what
a radiologist would write. Each chain is (disease with status, region, intermediate concept).
"""

from __future__ import annotations

import csv

import pytest

from boxmed_eval.records import Box, Study
from boxmed_model import cot, knowledge
from tests.conftest import shared_data

A = " (absent)"
U = " (uncertain)"
Expected = list[tuple[str, str, str | None]]

IU_SENTENCES: list[tuple[str, str, Expected]] = [
    # the paper's example family: low volumes -> volume loss -> Atelectasis
    ("355", "Lung volumes are low.", [("Atelectasis", "whole lung", "volume loss")]),
    ("84", "There are low lung volumes with bronchovascular crowding as a result.",
     [("Atelectasis", "whole lung", "volume loss")]),
    ("98", "Reduced lung volumes with basilar atelectasis.", [("Atelectasis", "whole lung", "volume loss")]),
    ("739", "The lung volumes are low normal.", [("No Finding", "whole lung", None)]),
    ("41", "Mild left-sided volume loss redemonstrated, unchanged.", [("Atelectasis", "left lung", "volume loss")]),
    ("120", "Low lung volumes bilaterally with central bronchovascular crowding without focal consolidation, "
            "pleural effusion, or pneumothoraces..",
     [("Atelectasis", "whole lung", "volume loss"), ("Consolidation" + A, "whole lung", None),
      ("Pleural Effusion" + A, "whole lung", None), ("Pneumothorax" + A, "whole lung", None)]),
    ("53", "There extremely low lung volumes. there is right basilar opacity.",
     [("Atelectasis", "whole lung", "volume loss"), ("Lung Opacity", "right lung", None)]),
    # collapse
    ("1277", "XXXX right middle lobe collapse appears less distinct than on prior study.",
     [("Atelectasis", "right lung", "collapse")]),
    ("54", "Minimal right basilar subsegmental atelectasis noted.",
     [("Atelectasis", "right lung", "subsegmental collapse")]),
    ("702", "The right lung demonstrates a large right pleural effusion with associated atelectatic collapse of "
            "the right middle lobe and partial collapse of the right lower lobe.",
     [("Pleural Effusion", "right lung", None), ("Atelectasis", "right lung", "collapse")]),
    # post-surgical hardware and devices -> Support Devices
    ("2", "Midline sternotomy XXXX.", [("Support Devices", "mediastinum", "post-surgical hardware")]),
    ("62", "Status post XXXX sternotomy and CABG.", [("Support Devices", "mediastinum", "post-surgical hardware")]),
    ("5", "Cholecystectomy clips are present.", [("Support Devices", "abdomen", "post-surgical hardware")]),
    ("235", "There is a left-sided biventricular pacemaker.",
     [("Support Devices", "cardiac silhouette", "cardiac device")]),
    # granulomas -> calcified nodule -> Lung Lesion (and a healed infection is no pneumonia)
    ("9", "Calcified granuloma is again seen in the right upper lobe.",
     [("Lung Lesion", "right apical zone", "calcified nodule")]),
    ("938", "Lungs are clear except for residuals of prior granulomatous infection.",
     [("Lung Lesion", "whole lung", "healed granulomatous disease")]),
    # costophrenic blunting -> Pleural Effusion
    ("32", "Mild blunting of right costophrenic XXXX.",
     [("Pleural Effusion", "right lung", "costophrenic angle blunting")]),
    ("2289", "Lungs are clear. blunting of the left costophrenic XXXX consistent with a small left pleural effusion "
             "and associated airspace disease.",
     [("Pleural Effusion", "left lung", "costophrenic angle blunting"), ("Lung Opacity", "left lung", None)]),
    # the region nearest each mention
    ("25", "There is moderate left pleural effusion and small right pleural effusion.",
     [("Pleural Effusion", "left lung", None), ("Pleural Effusion", "right lung", None)]),
    ("1383", "Persistent small right pleural effusion and XXXX XXXX atelectasis.",
     [("Pleural Effusion", "right lung", None), ("Atelectasis", "right lung", None)]),
    ("4", "There are irregular opacities in the left lung apex, that could represent a cavitary lesion in the "
          "left lung apex.",
     [("Lung Opacity", "left apical zone", None), ("Lung Lesion" + U, "left apical zone", None)]),
    ("4", "There are streaky opacities in the right upper lobe, XXXX scarring.",
     [("Lung Opacity", "right apical zone", None)]),
    ("25", "There is left lower lobe airspace disease identified.", [("Lung Opacity", "left lung", None)]),
    ("494", "XXXX opacities left lung base may represent atelectasis versus scarring.",
     [("Lung Opacity", "left lung", None), ("Atelectasis" + U, "left lung", None)]),
    ("7", "XXXX basilar atelectasis.", [("Atelectasis", "whole lung", None)]),
    ("2", "Borderline cardiomegaly.", [("Cardiomegaly" + U, "cardiac silhouette", None)]),
    # "normal ... except for X" is a positive X
    ("2416", "The outside x-XXXX is normal except for slight cardiomegaly.",
     [("Cardiomegaly", "cardiac silhouette", None)]),
    # negations, alone and in lists
    ("1", "There is no evidence of pneumothorax.", [("Pneumothorax" + A, "whole lung", None)]),
    ("1", "There are no XXXX of a pleural effusion.", [("Pleural Effusion" + A, "whole lung", None)]),
    ("19", "Heart size is normal.", [("Cardiomegaly" + A, "cardiac silhouette", None)]),
    ("1", "The cardiac silhouette and mediastinum size are within normal limits.",
     [("Cardiomegaly" + A, "cardiac silhouette", None), ("Enlarged Cardiomediastinum" + A, "mediastinum", None)]),
    ("4", "There is no pneumothorax or large pleural effusion.",
     [("Pneumothorax" + A, "whole lung", None), ("Pleural Effusion" + A, "whole lung", None)]),
    ("82", "No airspace disease, effusion or noncalcified nodule.",
     [("Lung Opacity" + A, "whole lung", None), ("Pleural Effusion" + A, "whole lung", None),
      ("Lung Lesion" + A, "whole lung", None)]),
    ("136", "No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.",
     [("Pneumonia" + A, "whole lung", None), ("Pleural Effusion" + A, "whole lung", None),
      ("Edema" + A, "whole lung", None), ("Pneumothorax" + A, "whole lung", None),
      ("Lung Lesion" + A, "whole lung", None)]),
    ("941", "The lungs are normally inflated without evidence of focal airspace disease, pleural effusion, or "
            "pneumothorax. .",
     [("Lung Opacity" + A, "whole lung", None), ("Pleural Effusion" + A, "whole lung", None),
      ("Pneumothorax" + A, "whole lung", None)]),
    ("2", "Clear lungs.", [("No Finding", "whole lung", None)]),
]


def _chains_of(sentence: str) -> Expected:
    return [(c.diseases[0], c.regions[0], c.concept) for c in cot.sentence_chains(sentence)]


def test_the_sentences_are_real_iu_xray_sentences() -> None:
    path = shared_data("iu_xray", "indiana_reports.csv")
    with path.open(encoding="utf-8") as handle:
        findings = {row["uid"]: row["findings"] for row in csv.DictReader(handle)}
    assert len(IU_SENTENCES) >= 30
    for uid, sentence, _ in IU_SENTENCES:
        assert sentence in cot.split_sentences(findings[uid]), (uid, sentence)


@pytest.mark.parametrize(("uid", "sentence", "expected"), IU_SENTENCES, ids=[f"uid{u}-{i}" for i, (u, _, _) in
                                                                             enumerate(IU_SENTENCES)])
def test_chains_of_real_iu_sentences(uid: str, sentence: str, expected: Expected) -> None:
    chains = cot.sentence_chains(sentence)
    assert _chains_of(sentence) == expected, "\n".join(c.render() for c in chains)
    for chain in chains:
        assert chain.sentence == sentence and chain.finding
        assert len(chain.diseases) == 1 and len(chain.regions) >= 1
        assert set(chain.regions) <= set(knowledge.ANATOMICAL_REGIONS)


def test_negated_findings_are_never_positive() -> None:
    negated = [s for _, s, exp in IU_SENTENCES if all(d.endswith(A) for d, _, _ in exp)]
    assert len(negated) >= 8
    for sentence in negated:
        assert all(d.endswith(A) for c in cot.sentence_chains(sentence) for d in c.diseases), sentence
    # expert mappings are negated too (their own scope check, not the labeler's)
    assert _chains_of("No evidence of volume loss.") == [("Atelectasis" + A, "whole lung", "volume loss")]
    assert _chains_of("Sternotomy wires have been removed.")[0][0] == "Support Devices (absent)"
    # "stable" is no negation of a device
    assert _chains_of("Stable sternotomy wires.")[0][0] == "Support Devices"


def test_paper_and_issue_examples() -> None:
    # paper Sec. 3.2.1: "Lungs are low in volume" -> Atelectasis via an intermediate concept -> whole lung
    (chain,) = cot.sentence_chains("Lungs are low in volume.")
    assert chain.render() == ("Finding: Lungs are low in volume. -> Concept: volume loss -> Disease: Atelectasis "
                              "-> Anatomy: whole lung")
    # the region nearest the mention, not the first lexicon match
    assert _chains_of("The heart is normal in size and the lungs are clear except for left lower lobe consolidation.") \
        == [("Cardiomegaly" + A, "cardiac silhouette", None), ("Consolidation", "left lung", None)]
    # one chain per mention, each with its own region and its own finding text
    chains = cot.sentence_chains("Mild cardiomegaly with small left pleural effusion and right basilar atelectasis.")
    assert [(c.finding, c.diseases, c.regions) for c in chains] == [
        ("Mild cardiomegaly", ["Cardiomegaly"], ["cardiac silhouette"]),
        ("Small left pleural effusion", ["Pleural Effusion"], ["left lung"]),
        ("Right basilar atelectasis", ["Atelectasis"], ["right lung"])]
    # a negated mention does not borrow its neighbour's location
    assert _chains_of("Left pleural effusion; no pneumothorax.") == [
        ("Pleural Effusion", "left lung", None), ("Pneumothorax" + A, "whole lung", None)]


def test_box_goes_to_the_chain_of_its_category() -> None:
    study = Study(id="s", image_paths=[], findings="Mild cardiomegaly with small left pleural effusion.",
                  boxes=[Box(0, 0, 10, 10, phrase="small left pleural effusion", category="Pleural Effusion",
                             image_width=100, image_height=100)])
    chains = cot.build_chains(study)
    assert [c.diseases for c in chains] == [["Cardiomegaly"], ["Pleural Effusion"]]
    assert not chains[0].boxes and chains[1].boxes == [(0.0, 0.0, 100.0, 100.0)]
    assert cot.render_target(chains, study.findings).count("-> Box:") == 1
