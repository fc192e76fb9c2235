"""Built-in model plugins of the harness (registered through entry points in pyproject.toml,
like any third-party plugin). Baselines with weights live in ``plugins/``."""
