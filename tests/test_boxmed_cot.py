"""BoxMed-RL knowledge banks, CoT builder, datasets of the stages and configuration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES, Box, Study
from boxmed_model import cot, data, knowledge, prompts, rewards
from boxmed_model.config import PipelineConfig

IU_REPORTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "indiana_reports.csv"
if not IU_REPORTS.exists():
    IU_REPORTS = Path("/work/shared/data/iu_xray/indiana_reports.csv")


def test_knowledge_banks() -> None:
    assert knowledge.DISEASE_CATEGORIES == CHEXPERT_CLASSES and len(knowledge.DISEASE_CATEGORIES) == 14
    assert len(knowledge.ANATOMICAL_REGIONS) == 12 and len(set(knowledge.ANATOMICAL_REGIONS)) == 12
    for _, regions in knowledge.ANATOMY_LEXICON:
        assert set(regions) <= set(knowledge.ANATOMICAL_REGIONS)


@pytest.mark.parametrize(("sentence", "regions"), [
    ("Right lower lobe opacity concerning for pneumonia.", ("right lung",)),
    ("Small left pleural effusion.", ("left lung",)),
    ("Opacity at the left lung base.", ("left lung",)),
    ("Mild cardiomegaly.", ("cardiac silhouette",)),
    ("The aortic knob is calcified.", ("mediastinum",)),
    ("Endotracheal tube terminates 3 cm above the carina.", ("trachea",)),
    ("Degenerative changes of the thoracic spine.", ("spine",)),
    ("Nodule in the right apex.", ("right apical zone",)),
    ("Left hilar fullness.", ("left hilar structures",)),
    ("Free air under the diaphragm.", ("abdomen",)),
    ("Bilateral pleural effusions.", ("whole lung",)),
    ("Lungs are low in volume.", ("whole lung",)),
])
def test_anatomy_lexicon(sentence: str, regions: tuple[str, ...]) -> None:
    assert knowledge.regions_for(sentence) == regions


def test_fallback_keyword_labels() -> None:
    labels = knowledge.keyword_label("Small left pleural effusion.")
    assert labels["Pleural Effusion"] == 1 and labels["No Finding"] is None
    assert knowledge.keyword_label("No pneumothorax.")["Pneumothorax"] == 0
    assert knowledge.keyword_label("Possible right lower lobe pneumonia.")["Pneumonia"] == -1
    assert knowledge.keyword_label("The heart size is normal.")["Cardiomegaly"] == 0


def test_chains_of_a_study_with_box() -> None:
    study = Study(id="s1", image_paths=[], findings="Mild cardiomegaly. No pneumothorax.",
                  boxes=[Box(100, 200, 300, 400, phrase="Mild cardiomegaly", category="Cardiomegaly",
                             region="cardiac silhouette", image_width=1000, image_height=1000)])
    chains = cot.build_chains(study)
    assert [c.finding for c in chains] == ["Mild cardiomegaly.", "No pneumothorax."]
    assert "Cardiomegaly" in chains[0].diseases and chains[0].regions == ["cardiac silhouette"]
    assert chains[0].boxes == [(100.0, 200.0, 300.0, 400.0)]
    assert chains[1].diseases == ["Pneumothorax (absent)"] and not chains[1].boxes
    target = cot.render_target(chains, study.findings)
    assert rewards.format_reward_one(target) == 1.0  # MCL targets have the SVR output format
    assert "Finding: Mild cardiomegaly. -> Disease: Cardiomegaly -> Anatomy: cardiac silhouette -> Box: (100,200),(300,400)" \
        in target
    assert target.endswith("<answer>Mild cardiomegaly. No pneumothorax.</answer>")


def test_unplaced_box_becomes_its_own_chain() -> None:
    study = Study(id="s2", image_paths=[], findings="The lungs are clear.",
                  boxes=[Box(0, 0, 50, 50, phrase="left apical pneumothorax", category="Pneumothorax",
                             image_width=100, image_height=100)])
    chains = cot.build_chains(study)
    assert len(chains) == 2 and chains[1].finding == "left apical pneumothorax"
    assert chains[1].diseases == ["Pneumothorax"] and chains[1].regions == ["left apical zone"]
    assert chains[1].boxes == [(0.0, 0.0, 500.0, 500.0)]


def test_cot_builder_on_real_iu_xray_reports() -> None:
    if not IU_REPORTS.exists():
        pytest.skip("shared IU X-Ray reports not available")
    with IU_REPORTS.open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["findings"].strip()][:60]
    positives = regions_seen = 0
    for row in rows:
        chains = cot.build_chains(Study(id=row["uid"], image_paths=[], findings=row["findings"]))
        assert chains, row["findings"]
        for chain in chains:
            assert chain.finding and chain.sentence in cot.split_sentences(row["findings"])
            assert chain.regions and set(chain.regions) <= set(knowledge.ANATOMICAL_REGIONS)
            names = [d.replace(" (absent)", "").replace(" (uncertain)", "") for d in chain.diseases]
            assert chain.diseases and set(names) <= set(CHEXPERT_CLASSES)
            positives += any(not d.endswith(")") and d != "No Finding" for d in chain.diseases)
            regions_seen += chain.regions != ["whole lung"]
    # real reports mention positive findings and specific anatomy: the mapping is not all default
    assert positives >= 10 and regions_seen >= 30
    # a specific real sentence: "Borderline cardiomegaly." (IU uid 2)
    chain = cot.build_chains(Study(id="2", image_paths=[], findings="Borderline cardiomegaly. Clear lungs."))[0]
    assert chain.regions == ["cardiac silhouette"] and chain.diseases[0].startswith("Cardiomegaly")


def _png(path: Path, size: tuple[int, int]) -> str:
    Image.new("L", size, 90).save(path)
    return str(path)


def test_stage_rows_quarter_images_and_scaled_boxes(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", (400, 200))
    study = Study(id="a", image_paths=[image], findings="Small left pleural effusion. No pneumothorax.",
                  boxes=[Box(200, 100, 300, 200, phrase="Small left pleural effusion", category="Pleural Effusion",
                             region="left lung", image_width=400, image_height=200),
                         Box(220, 120, 260, 160, phrase="Small left pleural effusion", image_width=400,
                             image_height=200),
                         Box(0, 0, 10, 10, phrase="lateral view only", image_index=1)])
    scaled = data.scale_box(study.boxes[0], 0.25)
    assert (scaled.x1, scaled.y1, scaled.x2, scaled.y2, scaled.image_width, scaled.image_height) == (50, 25, 75, 50, 100, 50)
    mcl = data.materialize(data.mcl_rows([study]))
    assert mcl[0]["images"][0].size == (100, 50)
    assert "Box: (500,500),(750,1000) (550,600),(650,800)" in mcl[0]["completion"][0]["content"][0]["text"]
    svr = data.materialize(data.svr_rows([study]))
    assert len(svr) == 1  # one phrase with its two boxes; the lateral-view box is skipped
    assert svr[0]["solution"] == [[500.0, 500.0, 750.0, 1000.0], [550.0, 600.0, 650.0, 800.0]]
    assert "Small left pleural effusion" in svr[0]["prompt"][0]["content"][1]["text"]
    adapter = data.materialize(data.adapter_rows([study]))
    assert adapter[0]["completion"][0]["content"][0]["text"] == study.findings
    with pytest.raises(DataError):
        data.svr_rows([Study(id="b", image_paths=[image], findings="x")])


def test_prompts_and_config(tmp_path: Path) -> None:
    assert "0 to 1000" in prompts.SVR_PROMPT and "<think>" in prompts.MCL_PROMPT
    cfg = PipelineConfig()
    assert (cfg.mcl.learning_rate, cfg.mcl.epochs, cfg.mcl.lr_scheduler) == (1e-4, 2.0, "cosine")
    assert (cfg.svr.beta, cfg.svr.loss_type, cfg.svr.num_generations, cfg.svr.learning_rate,
            cfg.svr.temperature, cfg.svr.epochs) == (0.04, "grpo", 8, 1e-6, 1.0, 4.0)
    assert (cfg.adapter.lora_r, cfg.adapter.epochs) == (8, 2.0)
    assert cfg.use_mcl and cfg.use_svr and cfg.use_adapter and not cfg.train_projector
    toml = tmp_path / "c.toml"
    toml.write_text('ablation = "wo_mcl"\nstrategy = "projector+adapter"\n[svr]\nnum_generations = 2\n')
    loaded = PipelineConfig.from_toml(toml)
    assert not loaded.use_mcl and loaded.use_svr and loaded.train_projector and loaded.use_adapter
    assert loaded.svr.num_generations == 2 and loaded.svr.beta == 0.04
    json.dumps(loaded.to_dict())
    toml.write_text("[svr]\nbogus = 1\n")
    with pytest.raises(DataError, match="bogus"):
        PipelineConfig.from_toml(toml)
    with pytest.raises(DataError):
        PipelineConfig(ablation="nothing")
    demo = Path(__file__).resolve().parents[1] / "boxmed_model" / "configs" / "demo_cpu.toml"
    assert PipelineConfig.from_toml(demo).svr.beta == 0.04
