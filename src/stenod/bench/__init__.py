"""The benchmark suite behind ``stenod bench``, one job per module:

* :mod:`~stenod.bench.matrix`: the configuration grid and the fresh-process runner;
  :mod:`~stenod.bench.worker` is the process that measures one configuration.
* :mod:`~stenod.bench.load`: the async load client for OpenAI-compatible and whisper.cpp endpoints.
* :mod:`~stenod.bench.wer`: Whisper-normalized WER/CER, also used by the accuracy tests.
* :mod:`~stenod.bench.schema`: the result file format (pydantic models, JSON Schema, version).
* :mod:`~stenod.bench.report`, :mod:`~stenod.bench.plots`: Markdown tables, ratios, PNG plots.
* :mod:`~stenod.bench.recommend`: sizing a deployment from measured RTF, CPU time and memory.
* :mod:`~stenod.bench.corpus`, :mod:`~stenod.bench.host`: the audio to replay; the machine.

Only the light, widely used names are re-exported here; import the modules for the rest (the
load client, plots and the runner pull in httpx, matplotlib and subprocess machinery).
"""

from stenod.bench.schema import (
    SCHEMA_VERSION,
    EngineBenchResult,
    EngineRun,
    LoadLevel,
    ServerBenchResult,
    load_result_or_raise,
)
from stenod.bench.wer import grouped_wer, normalize_text, wer

__all__ = [
    "SCHEMA_VERSION",
    "EngineBenchResult",
    "EngineRun",
    "LoadLevel",
    "ServerBenchResult",
    "grouped_wer",
    "load_result_or_raise",
    "normalize_text",
    "wer",
]
