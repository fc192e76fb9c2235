"""The ``tiny`` base preset and the processor helpers.

``tiny`` is a randomly initialised Qwen2-VL built from a config (2 text layers, hidden 64,
2 vision blocks) with a byte-level BPE tokenizer trained on report text and the Qwen chat
special tokens, so the whole pipeline (MCL -> SVR -> adapter -> plugin) runs on a CPU in
seconds (tests). ``small`` (4 text layers, hidden 256, 5M parameters) is the same recipe
with enough capacity to actually learn the demo data on a CPU in minutes (the demo run of
``boxmed_model/DEMO_RESULTS.md``). Presets are saved as normal model directories because
TRL's GRPOTrainer rebuilds the frozen reference model from the policy's path.

Without torchvision (CPU builds here), ``Qwen2VLProcessor`` cannot be built because it
insists on a video processor that needs torchvision; :class:`ImageOnlyQwen2VLProcessor`
is the same processor minus video. :func:`load_processor` uses the stock processor where
it loads and falls back to the image-only one, for the tiny preset and for real Qwen2-VL
checkpoints alike.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<|box_start|>", "<|box_end|>",
)

# The Qwen2-VL chat template, reduced to what the pipeline uses (text and image items,
# system/user/assistant turns, generation prompt). ``{% generation %}`` marks the assistant
# text so that TRL can compute the loss on completions only.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_PRESET = "tiny"
SMALL_PRESET = "small"
# name -> tiny_config() keyword arguments (random init; architecture only, no weights)
PRESETS: dict[str, dict[str, int]] = {
    TINY_PRESET: {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "vision_depth": 2},
    SMALL_PRESET: {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2, "vision_depth": 2},
}
DOCUMENTED_BASE = "Qwen/Qwen2-VL-2B-Instruct"
# from_pretrained keywords that never reach the hub: a model id is read from the HF cache only.
# transformers 5 does not pass local_files_only on to its PEFT adapter lookup (a HEAD request
# for adapter_config.json), so that lookup is told separately.
LOCAL_ONLY: dict[str, Any] = {"local_files_only": True, "adapter_kwargs": {"local_files_only": True}}


def _processor_classes():
    from transformers import ProcessorMixin
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """``Qwen2VLProcessor`` without the video processor (which needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor


def image_only_processor_class() -> type:
    global _IMAGE_ONLY_CLASS
    if _IMAGE_ONLY_CLASS is None:
        _IMAGE_ONLY_CLASS = _processor_classes()
    return _IMAGE_ONLY_CLASS


_IMAGE_ONLY_CLASS: type | None = None


def load_processor(path: str | os.PathLike[str], *, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """The processor of a Qwen2-VL model directory or HF id, padding on the left (batched
    generation needs it; training collators pad per their own rules)."""
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    kwargs: dict[str, Any] = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, **kwargs)
        if not hasattr(processor, "image_processor"):  # a bare tokenizer: the directory has no processor class
            raise TypeError(f"AutoProcessor gave a {type(processor).__name__}")
    except Exception as exc:  # no torchvision -> no video processor -> build the image-only one
        log.info("AutoProcessor failed for %s (%s): using the image-only Qwen2-VL processor", path, exc)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path), local_files_only=True, **kwargs)
        template = getattr(tokenizer, "chat_template", None)
        template_file = Path(str(path)) / "chat_template.jinja"
        if template_file.is_file():
            template = template_file.read_text(encoding="utf-8")
        processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                                 chat_template=template)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = "<|endoftext|>"
    return processor


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Any:
    """A byte-level BPE (tokenizers library) wrapped in ``PreTrainedTokenizerFast`` with the
    Qwen special tokens and a chat template that renders images as Qwen2-VL does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    # One token per digit, as Qwen2's own tokenizer does: box coordinates "(223,527)" then have
    # one regular structure instead of whatever number pieces BPE happened to merge from report
    # text, which a small model from scratch cannot learn to write reliably.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]))
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.image_token = "<|image_pad|>"
    fast.video_token = "<|video_pad|>"
    fast.padding_side = "left"
    return fast


def tiny_config(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                vision_depth: int = 2, tokenizer: Any = None) -> Any:
    from transformers import Qwen2VLConfig

    head_dim = hidden // heads
    # mrope sections must sum to head_dim / 2 (temporal, height, width)
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = {}
    if tokenizer is not None:
        ids = {
            "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        }
    text_config = {
        "vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": hidden * 2,
        "max_position_embeddings": 4096, "rope_scaling": {"type": "mrope", "mrope_section": section},
        "tie_word_embeddings": True,
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in ids:
            text_config[key] = ids[key]
    vision_config = {"depth": vision_depth, "embed_dim": hidden, "hidden_size": hidden, "num_heads": heads,
                     "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                     "in_channels": 3}
    top_level_ids = {k: v for k, v in ids.items()
                     if k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, tie_word_embeddings=True,
                         **top_level_ids)


DEFAULT_CORPUS = (
    "The heart size is normal. The mediastinum is unremarkable. The lungs are clear. "
    "There is no pneumothorax or pleural effusion. No focal consolidation. "
    "Mild cardiomegaly. Right lower lobe opacity concerning for pneumonia. Left basilar atelectasis. "
    "Small left pleural effusion. Pulmonary vascular congestion and interstitial edema. "
    "Degenerative changes of the thoracic spine. Endotracheal tube and right internal jugular catheter. "
    "Finding Disease Anatomy Box think answer Describe the findings of this chest X-ray."
)


def build_tiny_base(out_dir: str | os.PathLike[str], texts: Iterable[str] = (), *, seed: int = 0,
                    vocab_size: int = 1024, hidden: int = 64, layers: int = 2, preset: str | None = None) -> Path:
    """Write the ``tiny`` preset (model, tokenizer, processor) to ``out_dir`` and return it;
    ``preset`` (a :data:`PRESETS` name) overrides ``hidden``/``layers`` with that preset's sizes.

    ``texts`` (e.g. the demo dataset's findings and the prompt templates) train the BPE; a
    built-in corpus is always added so the vocabulary covers the prompt words.
    """
    import torch
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    from boxmed_model import prompts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [DEFAULT_CORPUS, *prompts.all_template_texts(), *texts]
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    torch.manual_seed(seed)
    sizes = dict(PRESETS[preset]) if preset else {"hidden": hidden, "layers": layers}
    config = tiny_config(len(tokenizer), tokenizer=tokenizer, **sizes)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Small images on CPU: 1/4-resolution demo images are a few hundred pixels a side.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224)
    processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=TINY_CHAT_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "boxmed_preset.json").write_text(json.dumps({"preset": preset or TINY_PRESET, "seed": seed, **sizes}) + "\n")
    return out


def resolve_base(base: str, *, cache_dir: str | os.PathLike[str] | None = None, texts: Iterable[str] = ()) -> str:
    """``tiny`` / ``small`` -> a built preset model directory (under ``cache_dir``); anything
    else is a local model directory or an HF hub id used as is (e.g. ``Qwen/Qwen2-VL-2B-Instruct``)."""
    if base not in PRESETS:
        return base
    from boxmed_eval.paths import cache_root

    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / ("tiny-qwen2vl" if base == TINY_PRESET else f"{base}-qwen2vl")
    if not (target / "config.json").is_file():
        build_tiny_base(target, texts, preset=base)
    return str(target)
