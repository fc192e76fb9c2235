"""IU X-Ray (Open-i) in R2Gen's layout: ``annotation.json`` + ``images/<id>/{0,1}.png``.

Both views (frontal and lateral) of each study are used, as in R2Gen."""

from __future__ import annotations

from typing import Any

from boxmed_eval.datasets.base import DATASETS, DatasetAdapter
from boxmed_eval.datasets.r2gen_annotation import read_r2gen_annotation
from boxmed_eval.records import Study
from boxmed_eval.text import prepare_findings


@DATASETS.register("iu_xray")
class IUXray(DatasetAdapter):
    description = "IU X-Ray (Open-i), R2Gen annotation.json split (train 2069 / val 296 / test 590), two views per study"
    needs = ("--data-root (or BOXMED_IU_XRAY_ROOT) holding annotation.json and images/; "
             "options: annotation=PATH, images=DIR")
    env_var = "BOXMED_IU_XRAY_ROOT"
    report_words = 80  # measured: 99th percentile of the R2Gen train findings is 78 words

    def load(self, split: str = "test") -> list[Study]:
        split = self.check_split(split)
        annotation = self.data_root / self.options.get("annotation", "annotation.json")
        image_dir = self.data_root / self.options.get("images", "images")
        studies = []
        for entry_split, index, entry in read_r2gen_annotation(annotation):
            if entry_split != split:
                continue
            where = f"{split}[{index}] (id {entry['id']})"
            images = [self.image_path(p, base=image_dir, file=annotation, record=where) for p in entry["image_path"]]
            meta: dict[str, Any] = {"source": "r2gen_annotation"}
            studies.append(Study(id=str(entry["id"]), image_paths=images, findings=prepare_findings(entry["report"]),
                                 split=split, meta=meta))
        return self.finish(studies, split, source=annotation)
