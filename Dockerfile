# whisperops, CPU image: the CLI, the Metaflow TranscriptionFlow and its card dependencies, with the
# bundled tiny.en and the multilingual base weights. Metaflow remote tasks can run in it:
#   docker build -t whisperops:cpu .
#   python -m whisperops.flows.transcription --with kubernetes:image=REGISTRY/whisperops:cpu run --sources ...
#   docker run --rm -v "$PWD:/data" -w /data whisperops:cpu whisperops transcribe talk.mp3 -o out
#
# GPU variant: build FROM an nvidia/cuda 12.x "cudnn-runtime" Ubuntu image with python3.11 instead
# (CTranslate2's wheels bring their CUDA kernels; cuDNN and cuBLAS come from the image) and run
# tasks with --device cuda (float16 is picked automatically); see the README's flow section.
FROM python:3.11-slim

# PyAV wheels carry their own FFmpeg; only certificates (for URL sources) are needed from Debian.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# No torch: transcription is CTranslate2 and the card's embeddings run in numpy.
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
