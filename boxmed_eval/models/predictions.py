"""``predictions``: reports generated elsewhere, read from a JSONL/CSV file (``id``, ``report``,
optional ``reasoning`` and ``boxes`` in JSONL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.plugins import ReportGenerator
from boxmed_eval.records import Prediction, Study, iter_jsonl, read_reports


class PredictionsFile(ReportGenerator):
    description = "Reports generated elsewhere, read from a file (JSONL or CSV with 'id' and 'report')"
    needs = "--model-arg path=FILE (JSONL/CSV with id and report columns; JSONL may add reasoning and boxes)"
    arguments = {"path": "JSONL/CSV file of generated reports with 'id' and 'report'"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "path" not in kwargs:
            raise BoxmedError("model 'predictions' needs --model-arg path=FILE (JSONL or CSV with id and report)")
        self.path = Path(str(kwargs["path"])).expanduser()
        reports = read_reports(self.path, role="prediction", allow_empty=True)
        self.predictions = {i: Prediction(id=i, report=r) for i, r in reports.items()}
        if self.path.suffix.lower() == ".jsonl":  # keep reasoning and boxes when present
            for number, obj in iter_jsonl(self.path):
                if "reasoning" in obj or "boxes" in obj:
                    try:
                        self.predictions[str(obj["id"])] = Prediction.from_dict({**obj, "report": self.predictions[str(obj["id"])].report})
                    except (TypeError, ValueError) as exc:
                        raise DataError(f"invalid boxes or reasoning ({exc})", file=self.path,
                                        record=f"line {number}") from None

    def generate(self, studies: list[Study]) -> list[Prediction]:
        missing = [s.id for s in studies if s.id not in self.predictions]
        if missing:
            raise DataError(f"{len(missing)} studies have no report in the file (e.g. {', '.join(missing[:5])})",
                            file=self.path, fix="generate reports for every study of the split, or pass --limit/"
                                                "another split")
        return [self.predictions[s.id] for s in studies]

    def provenance(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "n_reports": len(self.predictions)}
