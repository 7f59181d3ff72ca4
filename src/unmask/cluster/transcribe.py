"""Ray batch transcription: WebDataset shards, a directory or a glob of audio files -> Parquet + JSONL rows.

Pipeline: ``from_items(sources)`` -> ``flat_map`` (read a shard / a file into records, in Ray tasks) -> drop keys
already done -> ``map_batches(TranscribeBatch, compute=ActorPoolStrategy(size=N))`` (model loaded once per actor;
each batch is written by the actor as ``parts/part-<hash>.{parquet,jsonl}`` with an atomic rename, bad records as
``parts/errors-<hash>.jsonl``) -> the driver merges all parts into ``transcripts.parquet``,
``transcripts.jsonl``, ``errors.jsonl`` and ``report.json``.

Restart safety: a record is done once its part file exists; a restarted run skips done keys, so nothing is lost or
duplicated. A dead actor is restarted and its batch retried (``max_restarts``/``max_task_retries``); part names
are a hash of the batch's keys, so a retried batch overwrites its own part.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import ray

from ..modalities.audio.shards import AUDIO_EXTS

PARTS = "parts"


def resolve_inputs(spec: str | list[str]) -> list[dict]:
    """Sources of ``spec``: WebDataset shards (``*.tar``), a directory (its shards, else its audio files, recursively)
    or a glob. Each source is ``{"kind": "shard"|"file", "path", "key"}``."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            tars = sorted(p.glob("*.tar"))
            paths += tars or sorted(f for f in p.rglob("*") if f.suffix.lstrip(".").lower() in AUDIO_EXTS)
        elif p.is_file():
            paths.append(p)
        else:
            hits = sorted(Path(h) for h in glob.glob(s, recursive=True))
            if not hits:
                raise FileNotFoundError(f"input {s!r} matches nothing: give WebDataset shards (*.tar), a directory "
                                        "of audio files or a glob such as 'audio/**/*.flac'")
            paths += hits
    if not paths:
        raise FileNotFoundError(f"input {spec!r} holds no shards (*.tar) and no audio files ({', '.join(AUDIO_EXTS)})")
    out = []
    for p in paths:
        kind = "shard" if p.suffix == ".tar" else "file"
        out.append({"kind": kind, "path": str(p.resolve()), "key": p.stem if kind == "shard" else str(p)})
    return out


def _expand(src: dict) -> list[dict]:
    """Records of one source: ``key, audio (bytes), ref (str), source, error``."""
    if src["kind"] == "file":
        try:
            data = Path(src["path"]).read_bytes()
            return [{"key": src["key"], "audio": data, "ref": "", "source": src["path"], "error": ""}]
        except OSError as e:
            return [{"key": src["key"], "audio": b"", "ref": "", "source": src["path"], "error": f"unreadable: {e}"}]
    from ..modalities.audio.shards import iter_shard

    try:
        return [{"key": f"{src['key']}/{c.key}", "audio": c.audio, "ref": c.text or "", "source": src["path"],
                 "error": ""} for c in iter_shard(src["path"])]
    except Exception as e:  # a truncated or corrupt tar loses that shard only, with a reason
        return [{"key": src["key"], "audio": b"", "ref": "", "source": src["path"],
                 "error": f"corrupt shard: {type(e).__name__}: {e}"}]


def done_keys(out_dir: Path) -> set[str]:
    keys: set[str] = set()
    for f in sorted((out_dir / PARTS).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                keys.add(json.loads(line)["key"])
    return keys


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class TranscribeBatch:
    """Ray Data UDF: loads the model once; each call transcribes a batch and writes its part files."""

    def __init__(self, out_dir: str, model: str, options: dict, threads: int = 1, device: str = "cpu",
                 crash_once_marker: str | None = None) -> None:
        import torch

        from ..pipelines.transcribe import DecodeOptions, Transcriber

        torch.set_num_threads(max(1, threads))
        self.out = Path(out_dir) / PARTS
        self.out.mkdir(parents=True, exist_ok=True)
        self.options = DecodeOptions(**options)
        self.model = Transcriber.from_pretrained(model, device=device)
        self.crash_once_marker = crash_once_marker
        """Fault injection for tests: the first batch seen while this file is absent creates it and kills the actor."""

    def __call__(self, batch: dict) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..modalities.audio.frontend import AudioError, load_audio

        if self.crash_once_marker and not os.path.exists(self.crash_once_marker):
            Path(self.crash_once_marker).write_text("crashed once\n")
            os._exit(1)
        keys = [str(k) for k in batch["key"]]
        name = hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]
        good, audios, errors = [], [], []
        for i, key in enumerate(keys):
            src, err = str(batch["source"][i]), str(batch["error"][i])
            if not err:
                try:
                    audios.append(load_audio(bytes(batch["audio"][i]), key))
                    good.append(i)
                    continue
                except AudioError as e:
                    err = str(e)
            errors.append({"key": key, "source": src, "error": err})
        rows = []
        if good:
            t0 = time.perf_counter()
            outs = self.model.transcribe(audios, self.options)
            wall = time.perf_counter() - t0
            for i, o in zip(good, outs, strict=True):
                rows.append({"key": keys[i], "text": o.text, "confidence": round(o.confidence, 4),
                             "audio_s": round(o.audio_s, 3), "decode_steps": o.nfe, "ref": str(batch["ref"][i]),
                             "source": str(batch["source"][i]), "encode_s": round(o.timings["encode"], 4),
                             "decode_s": round(o.timings["decode"], 4), "batch_wall_s": round(wall, 4)})
            _atomic_write(self.out / f"part-{name}.parquet", lambda p: pq.write_table(pa.Table.from_pylist(rows), p))
        # the JSONL part is the commit record: written last, so a crash before it means "not done"
        _atomic_write(self.out / f"errors-{name}.jsonl",
                      lambda p: p.write_text("".join(json.dumps(e) + "\n" for e in errors)))
        _atomic_write(self.out / f"part-{name}.jsonl",
                      lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)
                                             + "".join(json.dumps({"key": e["key"], "error": True}) + "\n"
                                                       for e in errors)))
        failed = {e["key"] for e in errors}
        return {"key": keys, "ok": [k not in failed for k in keys]}


def merge(out_dir: Path) -> tuple[list[dict], list[dict]]:
    """All finished rows and errors (sorted by key, each key once), rewritten as the run's outputs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, dict] = {}
    errors: dict[str, dict] = {}
    for f in sorted((out_dir / PARTS).glob("part-*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r.get("error") is not True:
                rows[r["key"]] = r
    for f in sorted((out_dir / PARTS).glob("errors-*.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            errors[e["key"]] = e
    ordered = [rows[k] for k in sorted(rows)]
    errs = [errors[k] for k in sorted(errors)]
    if ordered:
        pq.write_table(pa.Table.from_pylist(ordered), out_dir / "transcripts.parquet")
    (out_dir / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ordered))
    (out_dir / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errs))
    return ordered, errs


def scored(rows: list[dict]) -> dict:
    """WER/CER over the rows that carry a (non-empty after normalising) reference."""
    from ..modalities.audio.corpus import normalize
    from ..pipelines.transcribe import error_rates

    refd = [r for r in rows if normalize(r.get("ref") or "")]
    if not refd:
        return {}
    return {**error_rates([r["ref"] for r in refd], [r["text"] for r in refd]), "scored": len(refd)}


def run(inputs: str | list[str], out_dir: str | Path, *, model: str = "tiny-asr", ray_address: str | None = None,
        actors: int = 1, gpus_per_actor: float = 0.0, batch_size: int = 8, options=None, progress: bool = True,
        crash_once_marker: str | None = None) -> dict:
    """Transcribe ``inputs`` into ``out_dir``; returns the report (also written as ``report.json``)."""
    from ..pipelines.transcribe import DecodeOptions

    if actors < 1 or batch_size < 1:
        raise ValueError(f"actors and batch_size must be >= 1, got {actors}, {batch_size}")
    options = options or DecodeOptions()
    out = Path(out_dir)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    sources = resolve_inputs(inputs)
    skip = done_keys(out)
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.verbose_progress = False
    # each actor reserves one CPU slot (leaving slots for the read tasks, or a 2-CPU machine deadlocks) but runs
    # torch on its share of the machine
    threads = max(1, int(ray.cluster_resources().get("CPU", 1) // actors))
    t0 = time.perf_counter()
    ds = ray.data.from_items(sources).flat_map(_expand).filter(lambda r: r["key"] not in skip)
    ds = ds.map_batches(
        TranscribeBatch, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus_per_actor or None, num_cpus=1,
        fn_constructor_kwargs={"out_dir": str(out), "model": model, "options": asdict(options), "threads": threads,
                               "device": "cuda" if gpus_per_actor else "cpu", "crash_once_marker": crash_once_marker},
        max_restarts=3, max_task_retries=3,
    )
    processed = sum(len(b["key"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
    wall = time.perf_counter() - t0
    rows, errors = merge(out)
    this_run = [r for r in rows if r["key"] not in skip]
    audio_s = sum(r["audio_s"] for r in this_run)
    report = {
        "count": len(rows), "errors": len(errors), "skipped_done": len(skip), "processed_this_run": processed,
        "audio_hours": round(sum(r["audio_s"] for r in rows) / 3600, 5), "wall_s": round(wall, 2),
        "rtf": round(wall / audio_s, 4) if audio_s else None,
        "throughput_audio_s_per_s": round(audio_s / wall, 2) if wall else None,
        "actors": actors, "batch_size": batch_size, "method": options.method, "model": model,
        **scored(rows),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
