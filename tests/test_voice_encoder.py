"""The voice encoder without torch: its checkpoint reader and numpy LSTM, checked against torch itself."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys

import numpy as np
import pytest

from whisperops.diarize import checkpoint

if importlib.util.find_spec("resemblyzer") is None:
    pytest.skip("the diarize extra is not installed (pip install --no-deps resemblyzer)", allow_module_level=True)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is the reference, and it is not installed")


@pytest.fixture(scope="module")
def diarizer():
    from whisperops.diarize.voice import VoiceEncoderDiarizer

    return VoiceEncoderDiarizer()


@pytest.fixture(scope="module")
def conversation_windows(diarizer, shared_speech):
    """Embeddings of the 1.6 s windows of two real readers, one after the other."""
    from whisperops.audio import load_audio
    from whisperops.diarize.voice import WINDOW_FRAMES

    audio = np.concatenate(
        [
            load_audio(shared_speech / "ljspeech/LJ001-0001.wav"),
            load_audio(shared_speech / "librispeech/2412-153948-0000.flac"),
        ]
    )
    mel = diarizer.mel(audio)
    return diarizer.embed(np.stack([mel[s : s + WINDOW_FRAMES] for s in range(0, mel.shape[0] - WINDOW_FRAMES, 40)]))


@needs_torch
def test_resemblyzer_weights_read_as_torch_reads_them():
    import torch

    from whisperops.diarize.voice import weights_path

    ours = checkpoint.load(weights_path())
    theirs = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert ours["step"] == theirs["step"]
    assert set(ours["model_state"]) == set(theirs["model_state"])
    for name, tensor in theirs["model_state"].items():
        assert ours["model_state"][name].dtype == np.float32, name
        np.testing.assert_array_equal(ours["model_state"][name], tensor.numpy(), err_msg=name)


@needs_torch
def test_zip_checkpoints_with_views_and_dtypes_read_as_torch_wrote_them(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {
        "transposed": base.t(),  # a strided view
        "row": base[2],  # an offset into a shared storage
        "ints": torch.tensor([1, -2, 3], dtype=torch.int64),
        "half": torch.tensor([0.5, 1.5], dtype=torch.float16),
        "nested": [torch.ones(2), {"x": 3}],
    }
    torch.save(saved, tmp_path / "ck.pt")
    got = checkpoint.load(tmp_path / "ck.pt")
    np.testing.assert_array_equal(got["transposed"], base.t().numpy())
    np.testing.assert_array_equal(got["row"], base[2].numpy())
    assert got["ints"].dtype == np.int64 and got["ints"].tolist() == [1, -2, 3]
    assert got["half"].dtype == np.float16 and got["half"].tolist() == [0.5, 1.5]
    assert got["nested"][0].tolist() == [1.0, 1.0] and got["nested"][1] == {"x": 3}


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        for header in (checkpoint._LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"model_state": Evil()}, f, protocol=2)
    with pytest.raises(checkpoint.CheckpointError, match=r"evil\.pt: .*print is not a tensor.*refused"):
        checkpoint.load(path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=r"text\.pt: not a readable torch checkpoint"):
        checkpoint.load(tmp_path / "text.pt")


@needs_torch
def test_numpy_encoder_matches_torch_lstm_on_real_speech(diarizer, jfk):
    import torch

    from whisperops.audio import load_audio
    from whisperops.diarize.voice import WINDOW_FRAMES, weights_path

    mel = diarizer.mel(load_audio(jfk, 16000))
    # A batch larger than the encoder's own, so its chunking is crossed, and a window of silence-free speech.
    starts = np.linspace(0, mel.shape[0] - WINDOW_FRAMES, 80).astype(int)
    windows = np.stack([mel[s : s + WINDOW_FRAMES] for s in starts])
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    lstm, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
    with torch.inference_mode():
        _, (hidden, _) = lstm(torch.from_numpy(windows))
        expected = torch.nn.functional.normalize(torch.relu(linear(hidden[-1])), dim=1).numpy()
    got = diarizer.embed(windows)
    assert got.shape == (80, 256) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert diarizer.embed(windows[:0]).shape == (0, 256)


def test_diarizing_imports_no_torch(jfk):
    code = (
        "import sys; from whisperops.diarize import DiarizeSettings, diarize_file; "
        f"turns = diarize_file({str(jfk)!r}, DiarizeSettings(diarize=True)); "
        "assert turns, 'no speech found'; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'resemblyzer', 'librosa')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_average_linkage_cuts_as_scipy_does(diarizer, conversation_windows):
    from scipy.cluster.hierarchy import fcluster, linkage

    from whisperops.diarize.linkage import AverageLinkage

    rng = np.random.default_rng(0)
    noise = rng.standard_normal((120, 16))
    cases = {
        "real voices": conversation_windows,
        "random": noise / np.linalg.norm(noise, axis=1, keepdims=True),
        "two points": conversation_windows[:2],
    }
    for name, x in cases.items():
        ours = AverageLinkage(x)
        tree = linkage(x, method="average", metric="cosine")
        np.testing.assert_allclose(ours.heights, tree[:, 2], atol=1e-5, err_msg=name)
        for k in range(1, min(len(x), 9) + 1):
            assert _same_partition(ours.cut(k), fcluster(tree, t=k, criterion="maxclust")), (name, k)
        for t in (0.2, 0.4, 0.6):
            assert _same_partition(ours.cut_at(t), fcluster(tree, t=t, criterion="distance")), (name, t)


def test_batches_embedded_in_threads_equal_one_thread(diarizer, jfk, monkeypatch):
    """Windows are embedded a batch per thread where cores allow: the same vectors as one thread."""
    from whisperops.audio import load_audio
    from whisperops.diarize import voice

    mel = diarizer.mel(load_audio(jfk))
    mels = np.stack([mel[s : s + voice.WINDOW_FRAMES] for s in range(0, mel.shape[0] - voice.WINDOW_FRAMES, 5)])
    assert len(mels) > 2 * voice.EMBED_BATCH
    monkeypatch.setattr(voice, "_cores", lambda: 1)
    alone = [diarizer.embed(mels), diarizer.embed(mels[:20])]
    monkeypatch.setattr(voice, "_cores", lambda: 3)
    assert np.array_equal(diarizer.embed(mels), alone[0])
    assert np.array_equal(diarizer.embed(mels[:20]), alone[1]), "a short file's windows split over the cores"
    assert diarizer.embed(mels[:0]).shape == (0, 256)
