"""BoxMed-RL training stages on the tiny preset (a few steps each), LoRA freezing, resume,
the plugin's generation, and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from boxmed_eval.records import Box, Study

pytest.importorskip("trl")
pytest.importorskip("peft")

from boxmed_model.config import AdapterConfig, MCLConfig, PipelineConfig, SVRConfig  # noqa: E402
from boxmed_model.plugin import BoxMedRL  # noqa: E402
from boxmed_model.tiny import build_tiny_base  # noqa: E402
from boxmed_model.train import run_pipeline  # noqa: E402

FAKE = [
    ("Mild cardiomegaly. No pneumothorax.", "Mild cardiomegaly", "Cardiomegaly", (150, 260, 420, 420)),
    ("Small left pleural effusion. The heart size is normal.", "Small left pleural effusion", "Pleural Effusion",
     (300, 300, 470, 480)),
    ("Right lower lobe opacity. No effusion.", "Right lower lobe opacity", "Lung Opacity", (40, 250, 220, 460)),
]


def make_studies(root: Path, n: int = 3, size: tuple[int, int] = (448, 384)) -> list[Study]:
    root.mkdir(parents=True, exist_ok=True)
    studies = []
    for i in range(n):
        text, phrase, category, box = FAKE[i % len(FAKE)]
        image = Image.new("L", size, 20)
        ImageDraw.Draw(image).rectangle(box, fill=200)
        path = root / f"img{i}.png"
        image.save(path)
        studies.append(Study(id=f"s{i}", image_paths=[str(path)], findings=text, split="train",
                             boxes=[Box(*box, phrase=phrase, category=category, image_width=size[0],
                                        image_height=size[1])]))
    return studies


def quick_config(**overrides) -> PipelineConfig:  # noqa: ANN003
    return PipelineConfig(mcl=MCLConfig(max_steps=2), adapter=AdapterConfig(max_steps=2),
                          svr=SVRConfig(max_steps=1, num_generations=2, max_completion_length=12,
                                        gradient_accumulation_steps=1),
                          **{"save_steps": 1000, **overrides})


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Study]:
    return make_studies(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, studies: list[Study]) -> str:
    return str(build_tiny_base(tmp_path_factory.mktemp("tiny"), [s.findings for s in studies]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, base: str, studies: list[Study]) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_pipeline("all", base, quick_config(), out, report_studies=studies, grounding_studies=studies)
    return out


def _state(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def test_all_stages_run_and_write_the_manifest(trained: Path, base: str) -> None:
    manifest = json.loads((trained / "boxmedrl.json").read_text())
    assert list(manifest["stages"]) == ["mcl", "svr", "adapter"]
    assert manifest["stages"]["svr"]["start"] == "mcl/final" and manifest["stages"]["adapter"]["start"] == "svr/final"
    assert manifest["phase1"] == "svr/final" and manifest["adapter"] == "adapter/final"
    assert manifest["config"]["svr"]["beta"] == 0.04 and manifest["config"]["svr"]["loss_type"] == "grpo"
    mcl_history = json.loads((trained / "mcl" / "log_history.json").read_text())
    assert [row["loss"] for row in mcl_history if "loss" in row]
    svr_history = json.loads((trained / "svr" / "log_history.json").read_text())
    logged = next(row for row in svr_history if "reward" in row)
    assert "rewards/iou_reward/mean" in logged and "rewards/format_reward/mean" in logged
    assert "iou_group_std" in logged and "first_iou_group_std" in manifest["stages"]["svr"]["summary"]
    # MCL trains the whole model (Eq. 1): language and vision weights both move
    before, after = _state(base), _state(trained / "mcl" / "final")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("layers" in k for k in changed) and any("visual" in k for k in changed)


def test_adapter_only_changes_lora_parameters(trained: Path) -> None:
    adapter = _state(trained / "adapter" / "final")
    assert adapter and all("lora_" in k and "language_model" in k for k in adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0: it trained
    config = json.loads((trained / "adapter" / "final" / "adapter_config.json").read_text())
    assert config["r"] == 8
    # the phase-I weights under the adapter are untouched: load them through peft and compare
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    phase1 = AutoModelForImageTextToText.from_pretrained(trained / "svr" / "final").state_dict()
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(trained / "svr" / "final"),
                                      trained / "adapter" / "final")
    merged = {k: v for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    compared = 0
    for name, value in merged.items():
        key = name.replace(".base_layer", "")
        if key in phase1:
            assert torch.equal(phase1[key], value), key
            compared += 1
    assert compared > 20


def test_table5_strategies_freeze_the_right_parts(base: str) -> None:
    from boxmed_model.train import load_model, prepare_adapter_model

    def trainable(strategy: str) -> set[str]:
        model = prepare_adapter_model(load_model(base), PipelineConfig(strategy=strategy))
        groups = set()
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups.add("lora" if "lora_" in name else "projector" if ".merger." in name
                           else "vision" if ".visual." in name else "other")
        return groups

    assert trainable("adapter") == {"lora"}
    assert trainable("projector") == {"projector"}
    assert trainable("vision_tower") == {"vision"}
    assert trainable("projector+adapter") == {"lora", "projector"}
    assert trainable("vision_tower+adapter") == {"lora", "vision"}


def test_ablation_and_resume(tmp_path: Path, base: str, studies: list[Study]) -> None:
    # w/o MCL & SVR: only the adapter, straight from the base
    manifest = run_pipeline("all", base, quick_config(ablation="wo_mcl_svr"), tmp_path / "abl",
                            report_studies=studies)
    assert list(manifest["stages"]) == ["adapter"] and manifest["phase1"] is None
    # resume: a stage interrupted after a checkpoint continues from it
    cfg = quick_config(save_steps=1)
    run_pipeline("mcl", base, cfg, tmp_path / "res", report_studies=studies)
    import shutil

    shutil.rmtree(tmp_path / "res" / "mcl" / "final")  # as if killed after checkpoint-2
    cfg.mcl.max_steps = 3
    run_pipeline("mcl", base, cfg, tmp_path / "res", report_studies=studies)
    history = json.loads((tmp_path / "res" / "mcl" / "log_history.json").read_text())
    assert max(row.get("step", 0) for row in history) == 3
    assert (tmp_path / "res" / "mcl" / "checkpoint-3").is_dir()
    # a finished stage is skipped on rerun
    again = run_pipeline("mcl", base, cfg, tmp_path / "res", report_studies=studies)
    assert again["stages"]["mcl"]["path"] == "mcl/final"


def test_plugin_generates_batched_reports(trained: Path, studies: list[Study]) -> None:
    plugin = BoxMedRL(weights=str(trained), batch_size=2, max_new_tokens=6)
    predictions = plugin.generate(studies)
    assert [p.id for p in predictions] == [s.id for s in studies]
    assert all(isinstance(p.report, str) and p.reasoning is None for p in predictions)
    assert plugin.provenance()["adapter"].endswith("adapter/final")
    # report mode merges the LoRA adapter into the weights: a plain model, no LoRA layers left
    assert type(plugin.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert not any("lora_" in name for name, _ in plugin.model.named_parameters())
    grounded = BoxMedRL(weights=str(trained), mode="grounded", max_new_tokens=6, max_reasoning_tokens=4)
    grounded.setup()  # grounded mode keeps the adapter switchable (merged for reports, unmerged to ground)
    assert type(grounded.model).__name__ == "PeftModelForCausalLM"
    probe = studies[:1]
    assert [p.report for p in BoxMedRL(weights=str(trained), max_new_tokens=6).generate(probe)] == \
        [p.report for p in grounded.generate(probe)]  # merged and unmerged adapters write the same report


def test_grounded_mode_returns_boxes_in_original_pixels(trained: Path, studies: list[Study], monkeypatch) -> None:
    plugin = BoxMedRL(weights=str(trained), mode="grounded")
    calls: list[tuple[int, bool]] = []

    def fake_generate(conversations, images, max_new_tokens, *, use_adapter=True):  # noqa: ANN001, ANN202
        calls.append((len(conversations), use_adapter))
        text = conversations[0][0]["content"][1]["text"]
        if text.startswith("Write the findings"):
            return ["Mild cardiomegaly. No pneumothorax."] * len(conversations)
        if text.startswith("Read this chest"):
            return ["<think>Finding: Mild cardiomegaly. -> Disease: Cardiomegaly</think><answer>x</answer>"] * len(conversations)
        return ["<think>heart</think><answer>(250,500),(500,1000),(0,0),(100,100)</answer>"] * len(conversations)

    plugin.setup()
    monkeypatch.setattr(plugin, "_generate", fake_generate)
    predictions = plugin.generate(studies[:2])
    assert calls == [(2, True), (2, False), (4, False)]  # reasoning and boxes come from the phase-I model
    first = predictions[0]
    assert first.reasoning == "Finding: Mild cardiomegaly. -> Disease: Cardiomegaly"
    assert len(first.boxes) == 4  # every box of each of the two sentences is kept
    box = first.boxes[0]
    assert (box.x1, box.y1, box.x2, box.y2) == (112.0, 192.0, 224.0, 384.0)  # 448x384 original image
    assert box.phrase == "Mild cardiomegaly." and box.category == "Cardiomegaly" and box.region == "cardiac silhouette"


def test_train_and_chains_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from boxmed_eval.cli import main
    from boxmed_eval.plugins import MODELS

    assert "boxmedrl" in MODELS.names()  # the pyproject entry point, no in-process registration
    runner = CliRunner()
    result = runner.invoke(main, ["chains", "--dataset", "demo", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "Finding:" in result.output and "-> Anatomy:" in result.output
    out = tmp_path / "cli"
    result = runner.invoke(main, ["train", "boxmedrl", "--stage", "all", "--base", "tiny", "--dataset", "demo",
                                  "--ablation", "wo_mcl_svr", "--limit", "3", "--max-steps", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "boxmedrl.json").read_text())
    assert manifest["base"] == "tiny_base" and manifest["base_label"] == "tiny" and manifest["adapter"]


def test_grounding_warmup_rows_teach_the_rewarded_answer(studies: list[Study]) -> None:
    """The MCL demo warm-up rows are exactly what SVR rewards fully: format 1 and IoU 1."""
    from boxmed_model import data as stage_data
    from boxmed_model.rewards import format_reward_one, iou_reward_one

    svr = stage_data.materialize(stage_data.svr_rows(studies))
    warm = stage_data.materialize(stage_data.grounding_warmup_rows(studies))
    assert len(warm) == len(svr) and set(warm[0]) == {"id", "prompt", "completion", "images"}
    for row, query in zip(warm, svr):
        assert row["prompt"] == query["prompt"]
        target = row["completion"][0]["content"][0]["text"]
        assert target.startswith("<think>\nFinding: ") and "-> Anatomy:" in target
        assert format_reward_one(target) == 1.0 and iou_reward_one(target, query["solution"]) == 1.0
    # the paper's MCL mix has no such rows unless the demo switch is on
    assert PipelineConfig().mcl.grounding_warmup is False
    assert PipelineConfig.from_toml(Path(__file__).parents[1] / "boxmed_model/configs/demo_cpu.toml").mcl.grounding_warmup


def test_small_preset_sizes(tmp_path: Path) -> None:
    from transformers import AutoConfig

    from boxmed_model.tiny import PRESETS

    path = build_tiny_base(tmp_path / "small", ["Mild cardiomegaly."], preset="small")
    config = AutoConfig.from_pretrained(path)
    assert config.text_config.hidden_size == PRESETS["small"]["hidden"] == 256
    assert config.text_config.num_hidden_layers == 4
    assert json.loads((path / "boxmed_preset.json").read_text())["preset"] == "small"


def test_vision_pretraining_trains_only_the_vision_tower(tmp_path: Path, base: str, studies: list[Study]) -> None:
    from boxmed_eval.errors import DataError
    from boxmed_model.vision_pretrain import DONE, pretrain_vision, training_labels

    labels = training_labels(studies)
    assert labels.shape == (3, 14) and labels.sum() >= 3  # cardiomegaly, effusion, opacity read from the reports
    out = pretrain_vision(base, studies, tmp_path / "vision", steps=3, batch_size=2)
    before, after = _state(base), _state(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("visual" in k for k in changed)
    assert any("merger" in k for k in changed) and any("blocks" in k for k in changed)
    summary = json.loads((out / DONE).read_text())
    assert summary["steps"] == 3 and summary["studies"] == 3
    stamp = (out / DONE).stat().st_mtime_ns
    assert pretrain_vision(base, studies, tmp_path / "vision", steps=3) == out and (out / DONE).stat().st_mtime_ns == stamp
    mixed = studies[:2] + make_studies(tmp_path / "other", 1, size=(300, 500))
    with pytest.raises(DataError, match="one size"):
        pretrain_vision(base, mixed, tmp_path / "mixed", steps=1)


def test_freeze_vision_keeps_the_vision_tower_through_mcl_and_svr(tmp_path: Path, base: str,
                                                                  studies: list[Study]) -> None:
    cfg = quick_config(ablation="wo_svr")
    cfg.mcl.freeze_vision = True
    cfg.mcl.learning_rate = 1e-2  # large steps: anything trainable moves
    run_pipeline("mcl", base, cfg, tmp_path / "frozen", report_studies=studies, grounding_studies=studies)
    before, after = _state(base), _state(tmp_path / "frozen" / "mcl" / "final")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and not any("visual" in k for k in moved)
    cfg.mcl.freeze_vision = False
    run_pipeline("mcl", base, cfg, tmp_path / "trained", report_studies=studies, grounding_studies=studies)
    trained = _state(tmp_path / "trained" / "mcl" / "final")
    assert any("visual" in k and not torch.equal(before[k], trained[k]) for k in before)

    from boxmed_model.train import build_svr_trainer

    cfg.svr.freeze_vision = True
    trainer, _ = build_svr_trainer(base, studies, cfg, tmp_path / "svr")
    visual = [p.requires_grad for n, p in trainer.model.named_parameters() if "visual" in n]
    assert visual and not any(visual)
    assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "visual" not in n)
