"""The library versions BoxMed-RL training is written against, checked once at import of
:mod:`boxmed_model.train` so a mismatch fails with one clear message instead of an
``ImportError``/``TypeError`` deep inside a trainer.

The code uses transformers 5 APIs (``Qwen2VLImageProcessorPil``, ``dtype=`` in
``from_pretrained``, ``activation_checkpointing``), TRL 1 trainers (``SFTConfig(
completion_only_loss=...)``, ``GRPOConfig(loss_type=...)``) and peft's regex
``target_modules``. Keep in sync with ``pyproject.toml``.
"""

from __future__ import annotations

from importlib import metadata

from boxmed_eval.errors import BoxmedError

# distribution -> (minimum inclusive, maximum exclusive); None = no bound
REQUIRED: dict[str, tuple[str, str | None]] = {
    "transformers": ("5.0", "6"),
    "trl": ("1.0", "2"),
    "peft": ("0.17", "1"),
}
INSTALL_HINT = 'pip install "boxmed-eval[train]"  (or: pip install "transformers>=5,<6" "trl>=1,<2" "peft>=0.17,<1")'


def _parse(version: str) -> tuple[int, ...]:
    from packaging.version import Version

    return Version(version).release


def version_problems(installed: dict[str, str | None] | None = None) -> list[str]:
    """One line per distribution that is missing or outside :data:`REQUIRED`."""
    problems = []
    for name, (low, high) in REQUIRED.items():
        if installed is not None:
            have = installed.get(name)
        else:
            try:
                have = metadata.version(name)
            except metadata.PackageNotFoundError:
                have = None
        wanted = f">={low}" + (f",<{high}" if high else "")
        if have is None:
            problems.append(f"{name} is not installed (required {wanted})")
            continue
        release = _parse(have)
        if release < _parse(low) or (high is not None and release >= _parse(high)):
            problems.append(f"{name} {have} is installed, BoxMed-RL training requires {name}{wanted}")
    return problems


def check_training_versions(installed: dict[str, str | None] | None = None) -> None:
    """Raise :class:`BoxmedError` naming installed and required versions on any mismatch,
    and when transformers lacks the Qwen2-VL PIL image processor the code imports."""
    problems = version_problems(installed)
    if not problems and installed is None:
        try:
            from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil  # noqa: F401
        except ImportError as exc:
            problems.append(f"transformers {metadata.version('transformers')} has no "
                            f"Qwen2VLImageProcessorPil ({exc}); BoxMed-RL requires transformers>=5,<6")
    if problems:
        raise BoxmedError("BoxMed-RL training cannot run with these library versions:\n  "
                          + "\n  ".join(problems) + f"\nfix: {INSTALL_HINT}")
