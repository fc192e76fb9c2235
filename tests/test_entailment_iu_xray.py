"""The deterministic entailment judge on real IU X-Ray sentence pairs.

Each pair names a sentence of one report (premise) and a sentence of another (hypothesis) by
report id and a snippet of the sentence; the sentences are read from
``../shared/data/iu_xray/r2gen_iu_xray_annotation.json`` (the data stays out of the
repository). The expected answer is what a reader of the two sentences says: does the premise
alone make the hypothesis true? Negations, laterality, lung zones, bilateral findings, the
CheXpert hierarchy and uncertainty are all represented.
"""

from __future__ import annotations

import json

import pytest

from boxmed_eval.metrics.entailment import rules_verdict
from boxmed_model.cot import split_sentences
from tests.conftest import shared_data

# (premise report, premise snippet, hypothesis report, hypothesis snippet, entailed?)
PAIRS = [
    # negations
    ("CXR3299_IM-1575", "There is no pneumothorax", "CXR3597_IM-1775", "No pneumothorax", True),
    ("CXR3516_IM-1715", "No pneumothorax or pleural effusion", "CXR951_IM-2447", "No pleural effusion", True),
    ("CXR951_IM-2447", "No pleural effusion", "CXR3516_IM-1715", "No pneumothorax or pleural effusion", False),
    ("CXR651_IM-2229", "small left pleural effusion", "CXR951_IM-2447", "No pleural effusion", False),
    ("CXR951_IM-2447", "No pleural effusion", "CXR651_IM-2229", "small left pleural effusion", False),
    ("CXR3579_IM-1759", "resolution of the left pleural effusion", "CXR651_IM-2229", "small left pleural effusion",
     False),
    ("CXR2293_IM-0875", "bilateral pneumothoraces have resolved", "CXR3597_IM-1775", "No pneumothorax", True),
    ("CXR3945_IM-2014", "increased size of left pneumothorax", "CXR3597_IM-1775", "No pneumothorax", False),
    ("CXR1573_IM-0374", "No pneumonia, effusions, edema", "CXR229_IM-0873", "findings of pulmonary edema", True),
    ("CXR899_IM-2407", "no focal consolidation, pleural effusion, or pneumothorax", "CXR3956_IM-2021",
     "No focal consolidation is seen", True),
    ("CXR3956_IM-2021", "No focal consolidation is seen", "CXR899_IM-2407",
     "no focal consolidation, pleural effusion, or pneumothorax", False),
    # normal lungs, heart, bones
    ("CXR2926_IM-1328", "The lungs are clear", "CXR1573_IM-0374", "Lungs are clear", True),
    ("CXR2926_IM-1328", "The lungs are clear", "CXR3687_IM-1838", "right lung appears clear", True),
    ("CXR3687_IM-1838", "right lung appears clear", "CXR2926_IM-1328", "The lungs are clear", False),
    ("CXR2926_IM-1328", "The lungs are clear", "CXR2384_IM-0942", "free of focal airspace disease", True),
    ("CXR1573_IM-0374", "Lungs are clear", "CXR3687_IM-1838", "atelectasis or early infiltrate", False),
    ("CXR2328_IM-0898", "Heart size is normal", "CXR2434_IM-0976", "heart is normal in size", True),
    ("CXR1451_IM-0291", "Heart size normal", "CXR3537_IM-1730", "Heart and mediastinum normal", False),
    ("CXR3537_IM-1730", "Heart and mediastinum normal", "CXR1451_IM-0291", "Heart size normal", True),
    ("CXR2887_IM-1289", "cardiomediastinal silhouette is normal", "CXR2328_IM-0898", "Heart size is normal", True),
    ("CXR3638_IM-1804", "Cardiomegaly", "CXR177_IM-0503", "heart size is enlarged", True),
    ("CXR177_IM-0503", "heart size is enlarged", "CXR2434_IM-0976", "heart is normal in size", False),
    ("CXR1105_IM-0072-1001", "Mild cardiomegaly", "CXR3091_IM-1445", "mildly enlarged", True),
    ("CXR152_IM-0335", "mild cardiomegaly and aortic", "CXR1105_IM-0072-1001", "Mild cardiomegaly", True),
    ("CXR1616_IM-0399", "No acute bony abnormality", "CXR2926_IM-1328", "Bony structures are intact", True),
    ("CXR2926_IM-1328", "Cardiac and mediastinal contours", "CXR2328_IM-0898", "Heart size is normal", True),
    ("CXR1237_IM-0159", "Pulmonary vascularity is within normal limits", "CXR2926_IM-1328", "The lungs are clear",
     False),
    # a finding outside the CheXpert classes is not a normal statement
    ("CXR2926_IM-1328", "The lungs are clear", "CXR2681_IM-1154", "foreign body noted over the left chest", False),
    ("CXR1616_IM-0399", "No acute bony abnormality", "CXR3120_IM-1466", "Fractures of the posterior left", False),
    # laterality, zones, bilateral findings
    ("CXR651_IM-2229", "small left pleural effusion", "CXR3256_IM-1543", "small bilateral pleural effusions", False),
    ("CXR3256_IM-1543", "small bilateral pleural effusions", "CXR651_IM-2229", "small left pleural effusion", True),
    ("CXR2999_IM-1383-0001", "left lung base", "CXR1203_IM-0137", "left upper lobe", False),
    ("CXR2999_IM-1383-0001", "left lung base", "CXR3866_IM-1959-0001", "right middle lobe", False),
    ("CXR1874_IM-0565", "airspace disease in the right lung base", "CXR3866_IM-1959-0001", "right middle lobe", False),
    ("CXR590_IM-2185", "right middle lobe airspace disease", "CXR3866_IM-1959-0001", "right middle lobe", True),
    ("CXR277_IM-1213", "nodular density in the right midlung", "CXR2560_IM-1064", "granuloma in the left upper lung",
     False),
    ("CXR403_IM-2052", "right-sided rib fractures", "CXR3120_IM-1466", "Fractures of the posterior left", False),
    ("CXR3980_IM-2039", "bibasilar opacities, left greater", "CXR2999_IM-1383-0001", "left lung base", True),
    ("CXR2999_IM-1383-0001", "left lung base", "CXR2165_IM-0781-0001", "development of bibasilar opacities", False),
    ("CXR2644_IM-1130", "lymph node in the right hilum", "CXR2485_IM-1013", "Calcified left hilar", False),
    # severity: a stated size must be the premise's; "no large effusion" leaves small ones open
    ("CXR1105_IM-0072-1001", "Mild cardiomegaly", "CXR2615_IM-1106", "Moderate cardiomegaly", False),
    ("CXR3299_IM-1575", "No large pleural effusion", "CXR951_IM-2447", "No pleural effusion", False),
    ("CXR951_IM-2447", "No pleural effusion", "CXR3280_IM-1561", "No large pleural effusion", True),
    # uncertainty is not a definite finding, nor its absence
    ("CXR343_IM-1658", "Cannot exclude early pulmonary edema", "CXR229_IM-0873", "findings of pulmonary edema", False),
]


@pytest.fixture(scope="module")
def reports() -> dict[str, str]:
    path = shared_data("iu_xray", "r2gen_iu_xray_annotation.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {item["id"]: item["report"] for items in data.values() for item in items}


def _sentence(reports: dict[str, str], report_id: str, snippet: str) -> str:
    found = [s for s in split_sentences(reports[report_id]) if snippet.lower() in s.lower()]
    assert len(found) == 1, f"{report_id}: {snippet!r} names {len(found)} sentences"
    return found[0]


def test_pairs_cover_what_they_claim():
    assert len(PAIRS) >= 20
    assert sum(expected for *_, expected in PAIRS) >= 10 and sum(not e for *_, e in PAIRS) >= 10
    assert all(premise != hypothesis for premise, _, hypothesis, _, _ in PAIRS)  # different reports


@pytest.mark.parametrize("premise_id,premise,hypothesis_id,hypothesis,expected", PAIRS,
                         ids=[f"{p[1][:24]}=>{p[3][:24]}" for p in PAIRS])
def test_rules_judge_on_iu_xray_pairs(reports, premise_id, premise, hypothesis_id, hypothesis, expected):
    premise_text = _sentence(reports, premise_id, premise)
    hypothesis_text = _sentence(reports, hypothesis_id, hypothesis)
    verdict = rules_verdict([premise_text], hypothesis_text)
    assert verdict.entailed is expected, f"{premise_text!r} => {hypothesis_text!r}"
    assert verdict.evidence == ([0] if expected else [])
