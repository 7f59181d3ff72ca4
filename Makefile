# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv first if it is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# A Python 3.12 that really runs: pyenv's newest 3.12, else python3.12 on PATH. (A pyenv shim named
# python3.12 exists even when 3.12 is not the active version, and then fails, so each candidate is tried.)
PYTHON312 ?= $(shell for c in $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV) \
  $$(command -v python3.12); do "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  && echo "$$c" && break; done)
EXTRAS := dev,audio,vision,robot,cluster,eval

.PHONY: setup sysdeps-audio demo test bench lint clean
setup: $(VENV)/.installed

# Speech synthesis (`unmask data speech`, and its test) needs flite, espeak-ng and sox: installed with apt when missing.
sysdeps-audio:
	@missing=""; for t in flite espeak-ng sox; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq flite espeak-ng sox >/dev/null; \
	  else echo "error: speech synthesis needs$$missing: sudo apt-get install flite espeak-ng sox" >&2; exit 1; fi; fi

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PYTHON312)" ]; then echo "error: no Python 3.12 found; install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12" >&2; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# every extra in ONE resolve: lerobot pins torch<2.12 and packaging<26, which must hold for all of them
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

demo: setup
	$(VENV)/bin/unmask models
	# the main job: Ray batch transcription of the shipped held-out sample shards on a local Ray
	rm -rf runs/demo/transcribe
	$(VENV)/bin/unmask transcribe src/unmask/assets/data/speech-sample --out runs/demo/transcribe --batch-size 8 --show 4
	# plain text generation underneath
	$(VENV)/bin/unmask generate --model tiny-text --gen-length 32 \
	  --prompt "47+385=" --prompt "sort: 9 2 7 4 1" --prompt "reverse: d o g s" \
	  --prompt "Mia has 12 pens and gets 7 more. How many pens does Mia have?" \
	  --prompt "Tell a story about Leo the fox, a red kite and the hill."
	$(VENV)/bin/unmask generate --model tiny-text --policy threshold --threshold 0.9 --gen-length 32 \
	  --prompt "47+385=" --prompt "sort: 9 2 7 4 1" --prompt "reverse: d o g s"

test: setup sysdeps-audio
	$(PY) -m pytest -q

bench: setup sysdeps-audio
	mkdir -p runs/bench
	[ -f runs/data/speech/test-000000.tar ] || $(VENV)/bin/unmask data speech --n-train 0 --n-test 300
	$(VENV)/bin/unmask bench asr --shards 'runs/data/speech/test-*.tar'
	$(VENV)/bin/unmask eval text --model tiny-text --policy low_confidence,random,margin,entropy,threshold \
	  --gen-length 32 --n-per-task 50 --json
	$(VENV)/bin/unmask bench decode --gen-lengths 64 --batch-sizes 1 8 --n-per-task 4 \
	  --plot runs/bench/decode64.png --markdown runs/bench/decode64.md
	$(VENV)/bin/unmask bench decode --gen-lengths 256 --batch-sizes 1 8 --n-per-task 4 \
	  --policies low_confidence,threshold,early_commit,adaptive_block --caches none,dual \
	  --plot runs/bench/decode256.png --markdown runs/bench/decode256.md
	[ -f runs/data/vision/test.jsonl ] || $(VENV)/bin/unmask data vision --n-test 200
	$(VENV)/bin/unmask eval-vlm --model tiny-vlm --data runs/data/vision/test.jsonl --tasks short,mc,mc_elbo,long \
	  --sweep --blind --out runs/bench/vlm --json
	$(VENV)/bin/unmask bench vla --episodes 200 --plot runs/bench/vla.png --json
	$(VENV)/bin/unmask bench vla --episodes 200 --execute 2 --modes async,async_inpaint \
	  --plot runs/bench/vla_execute2.png --json

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
