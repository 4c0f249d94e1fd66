"""``whisperops models``: what weights are here, and how to get the rest."""

from __future__ import annotations

from whisperops.cli.app import app, console


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command("models")
def models_cmd() -> None:
    """List models: name, size on disk, parameters, languages, format, installed, how to install."""
    from rich.table import Table

    from whisperops.models.registry import list_models

    table = Table(title="whisperops models")
    for col in ("name", "kind", "size", "params", "languages", "format", "installed", "install / path"):
        table.add_column(col)
    for m in list_models():
        params = f"{m.parameters / 1e6:.1f}M" if m.parameters else "-"
        where = str(m.path) if m.installed and m.path else m.install
        table.add_row(
            m.name, m.kind, _size(m.size_bytes), params, m.languages, m.format, "yes" if m.installed else "no", where
        )
    console.print(table)
