"""``whisperops data``: make labelled speech offline (TTS voices + augmentations) and domain text."""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console
from whisperops.cli.options import option
from whisperops.config import default_of
from whisperops.data.settings import SynthOptions

data_app = typer.Typer(help="Make labelled speech data offline: synthesis, augmentation, domain text.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth_cmd(
    texts: Path = typer.Option(..., "--texts", help="Text file: one sentence per line (or WRITTEN<TAB>SPOKEN)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for clips/ and manifest.jsonl."),
    voices: str = option(SynthOptions, "voices", "--voices"),
    augment: str = option(SynthOptions, "augment", "--augment"),
    seed: int = option(SynthOptions, "seed", "--seed"),
) -> None:
    """Speak each line once (voices and conditions round-robin) into 16 kHz WAVs plus manifest.jsonl."""
    from whisperops.data.synth import parse_augmentation, parse_list, read_texts, synthesize

    lines = read_texts(texts)
    voice_list = parse_list(voices, [default_of(SynthOptions, "voices")])
    aug_list = parse_list(augment, [default_of(SynthOptions, "augment")])
    for a in aug_list:
        parse_augmentation(a)  # fail on a typo before speaking anything
    with console.status(f"synthesising {len(lines)} clips") as status:
        rows = synthesize(
            lines,
            output,
            voice_list,
            aug_list,
            seed=seed,
            on_clip=lambda i, n: status.update(f"synthesising clip {i}/{n}"),
        )
    total = sum(r["duration_s"] for r in rows)
    console.print(f"wrote {len(rows)} clips ({total:.0f} s of speech) and {Path(output) / 'manifest.jsonl'}")


@data_app.command("banking")
def banking_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for train/, eval/, test/ and texts/."),
    train: int = typer.Option(400, "--train", help="Training sentences."),
    eval_n: int = typer.Option(40, "--eval", help="Evaluation sentences (checkpoint selection)."),
    test: int = typer.Option(80, "--test", help="Held-out test sentences (unseen voice and conditions)."),
    seed: int = typer.Option(0, "--seed"),
    texts_only: bool = typer.Option(False, "--texts-only", help="Write texts/SPLIT.txt without synthesising."),
) -> None:
    """Banking-call sentences (numbers, IBANs, fees, requests) as train/eval/test splits, spoken offline."""
    from whisperops.data import banking

    if texts_only:
        for split, utts in banking.make_splits(train, eval_n, test, seed).items():
            path = output / "texts" / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(u.line() + "\n" for u in utts), encoding="utf-8")
            console.print(f"wrote {len(utts)} sentences to {path}")
        return
    with console.status("synthesising banking calls"):
        manifests = banking.build(output, train, eval_n, test, seed)
    for split, path in manifests.items():
        console.print(f"{split}: {path}")
