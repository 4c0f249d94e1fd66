# The two set-up commands from the README:
#   make demo   transcribe a short speech sample with the bundled tiny.en weights
#   make test   run the whole test suite
# Both create .venv if missing, install torch==2.13.0 (CPU) before anything that depends on
# it, then the package. They are idempotent: a stamp keyed on pyproject.toml skips re-installs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
HASH := $(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
DEMO_DIR := build/demo
APT_PACKAGES := espeak-ng chromium

.PHONY: demo test install install-dev sysdeps lint docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PIP) install torch==2.13.0
	touch $@

$(VENV)/.installed-$(HASH): $(VENV)/.torch
	$(PIP) install -e '.[base,synth,flow]'
	rm -f $(VENV)/.installed-*; touch $@

$(VENV)/.dev-$(HASH): $(VENV)/.torch
	$(PIP) install -e '.[base,synth,flow,remote,eval,train,serve,dev,bench,diarize]'
	# openai-whisper (a peer the export tests load) requires triton, which is GPU-only and large.
	$(PIP) install --no-deps 'openai-whisper==20250625'
	# Diarization reads only resemblyzer's weights file; its librosa and webrtcvad are not needed.
	$(PIP) install --no-deps 'resemblyzer==0.1.4'
	rm -f $(VENV)/.dev-*; touch $@

install: $(VENV)/.installed-$(HASH)
install-dev: $(VENV)/.dev-$(HASH) sysdeps

# Debian packages the tests use (espeak-ng voices, headless Chromium for card screenshots).
sysdeps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: apt-get install$$missing failed; tests needing them will skip with a reason"; \
	  else \
	    echo "warning: missing$$missing and apt-get is not usable here; install them, or tests needing them skip"; \
	  fi; \
	fi

demo: install
	@test -f $(DEMO_DIR)/sample.wav || $(PY) -m whisperops.data.tts "$(DEMO_DIR)/sample.wav"
	$(VENV)/bin/whisperops transcribe $(DEMO_DIR)/sample.wav --model tiny.en --output-dir $(DEMO_DIR)/out --formats txt,srt,vtt,json
	@echo "--- transcript ($(DEMO_DIR)/out/sample.txt):"; cat $(DEMO_DIR)/out/sample.txt
	@echo "--- subtitles and transcripts written to:"; ls -1 $(DEMO_DIR)/out/sample.*

# The docs build first: it is quick, and --strict fails on a broken link or a reference the code
# no longer has (not --quiet: it hides the warnings that --strict counts, so nothing fails).
# NO_MKDOCS_2_WARNING: material's banner about its successor, not a docs problem.
test: install-dev docs
	$(PY) -m pytest -q

docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks docs/hooks
	$(VENV)/bin/ruff format --check src tests benchmarks docs/hooks

clean:
	rm -rf build .pytest_cache
