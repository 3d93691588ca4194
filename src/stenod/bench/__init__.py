"""The benchmark suite behind ``stenod bench``, one job per module:

* :mod:`~stenod.bench.matrix`: the configuration grid and the fresh-process runner;
  :mod:`~stenod.bench.worker` is the process that measures one configuration (``python -m``; its
  input and output are :mod:`~stenod.bench.job`).
* :mod:`~stenod.bench.load`: the async load client for OpenAI-compatible and whisper.cpp endpoints.
* :mod:`~stenod.bench.wer`: Whisper-normalized WER/CER, also used by the accuracy tests.
* :mod:`~stenod.bench.schema`: the result file format (pydantic models, JSON Schema, version).
* :mod:`~stenod.bench.report`, :mod:`~stenod.bench.plots`: Markdown tables, ratios, PNG plots
  (matplotlib is imported only when a plot is drawn).
* :mod:`~stenod.bench.recommend`: sizing a deployment from measured RTF, CPU time and memory.
* :mod:`~stenod.bench.corpus`, :mod:`~stenod.bench.host`: the audio to replay; the machine.

This package's public surface is what is re-exported here; the CLI imports nothing else.
"""

from stenod.bench.corpus import CorpusError, CorpusItem, load_corpus_or_raise
from stenod.bench.host import host_info
from stenod.bench.load import (
    EndpointUnreachableError,
    LoadItem,
    LoadOptions,
    RequestRecord,
    failure_summary,
    is_loopback_url,
    load_items_or_raise,
    run_load,
)
from stenod.bench.matrix import expand_grid, run_matrix
from stenod.bench.plots import plot_result
from stenod.bench.recommend import Recommendation, SizingTarget, recommend
from stenod.bench.report import (
    compare_markdown,
    compare_results,
    engines_markdown,
    result_markdown,
    server_markdown,
    threads_pivot_markdown,
)
from stenod.bench.schema import (
    SCHEMA_VERSION,
    BenchConfig,
    BenchFile,
    EngineBenchResult,
    EngineBenchSettings,
    EngineRun,
    LoadLevel,
    ServerBenchResult,
    ServerBenchSettings,
    json_schema,
    load_result_or_raise,
)
from stenod.bench.wer import grouped_wer, normalize_text, wer

__all__ = [
    "SCHEMA_VERSION",
    "BenchConfig",
    "BenchFile",
    "CorpusError",
    "CorpusItem",
    "EndpointUnreachableError",
    "EngineBenchResult",
    "EngineBenchSettings",
    "EngineRun",
    "LoadItem",
    "LoadLevel",
    "LoadOptions",
    "Recommendation",
    "RequestRecord",
    "ServerBenchResult",
    "ServerBenchSettings",
    "SizingTarget",
    "compare_markdown",
    "compare_results",
    "engines_markdown",
    "expand_grid",
    "failure_summary",
    "grouped_wer",
    "host_info",
    "is_loopback_url",
    "json_schema",
    "load_corpus_or_raise",
    "load_items_or_raise",
    "load_result_or_raise",
    "normalize_text",
    "plot_result",
    "recommend",
    "result_markdown",
    "run_load",
    "run_matrix",
    "server_markdown",
    "threads_pivot_markdown",
    "wer",
]
