"""``whisperops convert``: move Whisper weights between CTranslate2, Hugging Face, openai and whisper.cpp."""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console
from whisperops.cli.options import option
from whisperops.models.convert import ConvertOptions


@app.command("convert")
def convert_cmd(
    model: str = typer.Argument(..., help="Registry name (tiny.en, base, a registered name) or a model directory."),
    to: str = typer.Option(..., "--to", help="Target runtime: hf, ct2, openai or ggml."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (replaced if it exists)."),
    quantization: str = option(ConvertOptions, "quantization", "--quantization", "-q"),
    name: str | None = option(ConvertOptions, "name", "--name"),
) -> None:
    """Convert a Whisper model and register it, so --model NAME finds it.

    hf: transformers WhisperForConditionalGeneration + WhisperProcessor + generation config (for
    fine-tuning); ct2: CTranslate2 through ctranslate2's converter (float16 or int8); openai:
    openai-whisper model.pt; ggml: whisper.cpp ggml-model.bin.
    """
    import time

    from whisperops.models.convert import convert

    start = time.perf_counter()
    result = convert(model, to, output, quantization=quantization, name=name)
    reg = name or output.resolve().name
    console.print(
        f"wrote {result} ({to}) in {time.perf_counter() - start:.1f}s; registered as [bold]{reg}[/]", highlight=False
    )
