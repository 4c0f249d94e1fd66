# whisperops, CPU image: the CLI, the Metaflow TranscriptionFlow and its card dependencies, with the
# bundled tiny.en and the multilingual base weights. Metaflow remote tasks can run in it:
#   docker build -t whisperops:cpu .
#   python -m whisperops.flows.transcription --with kubernetes:image=REGISTRY/whisperops:cpu run --sources ...
#   docker run --rm -v "$PWD:/data" -w /data whisperops:cpu whisperops transcribe talk.mp3 -o out
#
# GPU variant: build FROM an nvidia/cuda 12.x "cudnn-runtime" Ubuntu image with python3.11 instead,
# install torch==2.13.0 from PyPI's default CUDA build (drop TORCH_INDEX_URL) and run tasks with
# --device cuda (float16 is picked automatically); see the README's flow section.
FROM python:3.11-slim

# PyAV wheels carry their own FFmpeg; only certificates (for URL sources) are needed from Debian.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Torch first, from the CPU-only wheel index, so sentence-transformers does not pull CUDA wheels.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX_URL"

WORKDIR /opt/whisperops
COPY pyproject.toml README.md ./
COPY src ./src
# remote: boto3 (S3 datastore) and the kubernetes client, which Metaflow's remote tasks need.
RUN pip install --no-cache-dir '.[base,flow,remote]'

# Metaflow rejects "root" as a user name; whisperops.flows falls back to "whisperops" but a named
# user is clearer in `whisperops runs`. Caches live in a volume-friendly place.
RUN useradd --create-home whisperops
USER whisperops
ENV WHISPEROPS_CACHE=/home/whisperops/.cache/whisperops \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /home/whisperops
CMD ["whisperops", "--help"]
