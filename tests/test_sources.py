"""Sources: files, folders, list files, URLs and playlists (yt-dlp against a loopback server)."""

from __future__ import annotations

import shutil

import pytest

from whisperops.errors import SourceError
from whisperops.sources import fetch, resolve


def test_folders_recurse_by_media_extension(tmp_path, jfk):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(jfk, tmp_path / "a" / "one.flac")
    shutil.copy(jfk, tmp_path / "a" / "b" / "two.flac")
    (tmp_path / "a" / "notes.md").write_text("not media")
    items = resolve([tmp_path / "a"])
    assert sorted(i.name for i in items) == ["b/two", "one"], "a folder's layout is mirrored in the names"
    assert all(i.error is None and i.path.exists() for i in items)


def test_list_files_comments_relative_paths_and_duplicates(tmp_path, jfk):
    shutil.copy(jfk, tmp_path / "jfk.flac")
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copy(jfk, sub / "jfk.flac")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# my batch\njfk.flac\n\n  jfk.flac  # again: dropped\nsub/jfk.flac\nmissing.wav\n")
    items = resolve([listing])
    good = [i for i in items if i.error is None]
    assert len(good) == 2 and good[0].name == "jfk", "duplicates dropped"
    assert good[1].name.startswith("jfk-") and len(good[1].name) == len("jfk-") + 6, "the second jfk gets a hash"
    assert resolve([listing])[1].name == good[1].name, "names are stable from run to run"
    bad = [i for i in items if i.error]
    assert len(bad) == 1 and "missing.wav" in bad[0].error and "no such file" in bad[0].error


def test_bad_sources_become_items_with_one_line_errors(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    items = resolve([str(tmp_path / "nope.mp3"), empty_dir, "ftp://example.org/a.mp3", "s3://bucket/key.wav"])
    errors = [i.error for i in items]
    assert all(e and "\n" not in e for e in errors)
    assert "no such file" in errors[0]
    assert "no media files" in errors[1]
    assert "only http and https" in errors[2] and "only http and https" in errors[3]
    with pytest.raises(SourceError):
        fetch(items[0])


def test_direct_media_url_is_downloaded_once_and_cached(media_server, jfk):
    base, root, requests = media_server
    shutil.copy(jfk, root / "speech.flac")
    [item] = resolve([f"{base}/speech.flac"])
    assert item.error is None and item.metadata["title"] == "speech"
    assert requests == [], "resolving a direct media link needs no network"
    path = fetch(item)
    assert path.read_bytes() == jfk.read_bytes()
    seen = len(requests)
    [again] = resolve([f"{base}/speech.flac"])
    assert fetch(again) == path
    assert len(requests) == seen, "second fetch must come from the download cache"


def test_page_with_media_expands_like_a_playlist(media_server, jfk, shared_speech):
    base, root, _ = media_server
    shutil.copy(jfk, root / "jfk.flac")
    shutil.copy(shared_speech / "ljspeech" / "LJ001-0001.wav", root / "lj.wav")
    (root / "episode.html").write_text(
        "<html><head><title>Episode 7</title></head><body>"
        '<audio src="jfk.flac"></audio><audio src="lj.wav"></audio></body></html>'
    )
    items = resolve([f"{base}/episode.html"])
    assert len(items) == 2
    assert [i.metadata["playlist"] for i in items] == ["Episode 7", "Episode 7"]
    assert [i.metadata["playlist_index"] for i in items] == [1, 2]
    assert fetch(items[1]).read_bytes() == (root / "lj.wav").read_bytes()


def _error(item) -> str:
    if item.error:
        return item.error
    with pytest.raises(SourceError) as err:
        fetch(item)
    return str(err.value)


def test_unreachable_missing_and_non_media_urls(media_server):
    base, root, _ = media_server
    (root / "about.html").write_text("<html><body>No media here.</body></html>")
    items = resolve([f"{base}/gone.mp3", "http://127.0.0.1:9/x.wav", f"{base}/about.html", f"{base}/missing-page"])
    assert len(items) == 4
    errors = [_error(item) for item in items]
    for item, error in zip(items, errors, strict=True):
        assert item.url in error and "\n" not in error
    assert "404" in errors[0] and "404" in errors[3]
    assert "refused" in errors[1].lower()
    assert "unsupported url" in errors[2].lower()


def test_youtube_playlist_expands_and_downloads_through_yt_dlp(media_server, jfk, shared_speech, monkeypatch):
    """YouTube itself is the one thing faked: its two extractors answer from canned data whose
    media URLs point at the loopback server, so our code and yt-dlp's real downloader both run."""
    from yt_dlp.extractor.youtube import YoutubeIE, YoutubeTabIE

    base, root, _ = media_server
    shutil.copy(jfk, root / "v1.flac")
    shutil.copy(shared_speech / "ljspeech" / "LJ001-0001.wav", root / "v2.wav")
    videos = {"vid00000001": ("Inaugural address", "v1.flac", 11), "vid00000002": ("Printing", "v2.wav", 10)}

    def fake_tab(self, url):
        entries = [
            self.url_result(f"https://www.youtube.com/watch?v={vid}", YoutubeIE, vid, title)
            for vid, (title, _, _) in videos.items()
        ]
        return self.playlist_result(entries, "PLtest", "Speeches")

    def fake_video(self, url):
        vid = self._match_id(url)
        title, file, duration = videos[vid]
        ext = file.rsplit(".", 1)[1]
        return {
            "id": vid,
            "title": title,
            "uploader": "Archive",
            "duration": duration,
            "webpage_url": url,
            "formats": [{"url": f"{base}/{file}", "ext": ext, "vcodec": "none", "acodec": ext, "format_id": "audio"}],
        }

    monkeypatch.setattr(YoutubeTabIE, "_real_extract", fake_tab)
    monkeypatch.setattr(YoutubeIE, "_real_extract", fake_video)
    items = resolve(["https://www.youtube.com/playlist?list=PLtest"])
    assert [i.name for i in items] == ["Inaugural_address", "Printing"]
    assert all(i.metadata["playlist"] == "Speeches" for i in items)
    path = fetch(items[0])
    assert path.read_bytes() == jfk.read_bytes()
    assert items[0].metadata["uploader"] == "Archive" and items[0].metadata["duration"] == 11
    assert items[0].metadata["url"] == "https://www.youtube.com/watch?v=vid00000001"
