"""Entry used by the kill -9 test: the CLI with a deliberately slow retrieval plugin registered."""

import sys
import time

import tests.cheap_metric  # noqa: F401  registers token_overlap
from boxmed_eval.cli import main
from boxmed_eval.models.retrieval import RetrievalBaseline
from boxmed_eval.plugins import MODELS


class SlowRetrieval(RetrievalBaseline):
    def generate(self, studies):
        time.sleep(0.4)
        return super().generate(studies)


MODELS.register("slow_retrieval")(SlowRetrieval)

if __name__ == "__main__":
    sys.exit(main())
