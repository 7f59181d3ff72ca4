"""``unmask`` command line: generate, transcribe, models, eval, train, data, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny-text", help="shipped model name or local HF-layout directory")
    p.add_argument("--policy", default="low_confidence", help="unmasking policy (see `unmask policies`)")
    p.add_argument("--threshold", type=float, default=None, help="confidence threshold (policy 'threshold')")
    p.add_argument("--cache", default="none", help="none, prefix or dual (see `unmask policies`)")
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="step budget over the canvas (default: gen length)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-chat-template", action="store_true", help="feed prompts raw")


def _policy(args: argparse.Namespace):
    from .decoders import build_policy

    cfg = {} if args.threshold is None else {"threshold": args.threshold}
    return build_policy(args.policy, cfg)


def _params(args: argparse.Namespace):
    from .decoders import SamplingParams

    return SamplingParams(gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
                          temperature=args.temperature, seed=args.seed)


def _generator(args: argparse.Namespace):
    from .pipelines.generate import TextGenerator

    return TextGenerator.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                         use_chat_template=not args.no_chat_template)


def cmd_generate(args: argparse.Namespace) -> int:
    prompts = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise SystemExit("give at least one --prompt or a --prompts-file")
    policy, params = _policy(args), _params(args)
    outs = _generator(args).generate(prompts, params, policy, args.cache)
    for o in outs:
        if args.json:
            print(json.dumps({"prompt": o.prompt, "text": o.text, "nfe": o.nfe, "timings": o.timings}))
        else:
            print(f"> {o.prompt}\n{o.text}\n  [nfe={o.nfe}, {params.gen_length / o.nfe:.2f} tokens/forward]")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .pipelines.eval_text import evaluate

    gen = _generator(args)
    params = _params(args)
    policies = args.policy.split(",")
    results = []
    for name in policies:
        args.policy = name
        r = evaluate(gen, params, _policy(args), args.cache, n_per_task=args.n_per_task, batch_size=args.batch_size,
                     progress=not args.json)
        results.append({"policy": name, **r})
        if not args.json:
            tasks = "  ".join(f"{k}={v:.2f}/{r['token_accuracy_per_task'][k]:.2f}" for k, v in r["per_task"].items())
            print(f"{name:>15}: exact-match {r['accuracy']:.3f}  token-acc {r['token_accuracy']:.3f}  "
                  f"nfe {r['nfe']:.1f}  tpf {r['tpf']:.2f}  ({r['wall_s']:.1f}s)\n{'':>17}{tasks}  (exact/token)")
    if args.json:
        print(json.dumps({"model": args.model, "gen_length": params.gen_length, "block_length": params.block_length,
                          "steps": params.steps, "results": results}, indent=2))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .core.checkpoint import read_config
    from .core.models import directory_size, shipped_models

    for name, path in shipped_models().items():
        raw = read_config(path)
        kind = raw.get("model_type", "?") + ("+audio" if (path / "asr_config.json").is_file() else "") + (
            "+action" if "unmask_action" in raw else "")
        print(f"{name:<12} {kind:<12} {directory_size(path) / 1e6:6.1f} MB  {path}")
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    from .decoders import CACHES, POLICIES

    for title, reg in (("policies", POLICIES), ("caches", CACHES)):
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<16} {(reg.get(name).__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import importlib

    recipes = {"text": "text", "asr": "asr", "vlm": "vlm", "vla": "vla"}
    if args.what not in recipes:
        raise SystemExit(f"unknown training recipe {args.what!r}; known: {', '.join(recipes)}")
    train = importlib.import_module(f".train.{recipes[args.what]}", __package__).main
    overrides = {"out_dir": args.out} if args.out else {}
    if args.steps:
        overrides["steps"] = args.steps
    print(train(args.config or f"configs/train_{args.what}.yaml", overrides))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.what == "robot":
        from .modalities.action.data import write_dataset

        out = write_dataset(args.out or "runs/data/robot", args.episodes, seed=args.seed, images=args.images)
        print(f"{args.episodes} expert episodes (LeRobotDataset) -> {out}")
        return 0
    if args.what == "vision":
        from .modalities.vision.scenes import write_split

        out = args.out or "runs/data/vision"
        for split, n in (("test", 200 if args.n_test is None else args.n_test), ("train", args.n_train or 0)):
            if n:
                print(f"{split}: {n} items per task -> {write_split(out, split, n)}")
        return 0
    from .modalities.audio.synth import plan, write_shards

    args.out = args.out or "runs/data/speech"
    n_test = 300 if args.n_test is None else args.n_test
    n_train = 8000 if args.n_train is None else args.n_train
    for split, n in (("test", n_test), ("train", n_train)):
        if n:
            shards = write_shards(plan(n, split, args.seed), args.out, split, per_shard=args.per_shard,
                                  workers=args.workers)
            print(f"{split}: {n} utterances in {len(shards)} shard(s) under {args.out}")
    return 0


def _decode_options(args: argparse.Namespace):
    from .pipelines.transcribe import DecodeOptions

    return DecodeOptions(method=args.method, policy=args.policy, threshold=args.threshold,
                         prior_threshold=args.prior_threshold, slack=args.slack, gen_length=args.gen_length)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .cluster.transcribe import run

    report = run(args.input, args.out, model=args.model, ray_address=args.ray_address, actors=args.actors,
                 gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size, options=_decode_options(args),
                 progress=not args.quiet)
    if args.show:
        from pathlib import Path

        lines = (Path(args.out) / "transcripts.jsonl").read_text().splitlines()[: args.show]
        for row in map(json.loads, lines):
            print(f"{row['key']}  ({row['audio_s']:.1f} s, {row['decode_steps']} decoder forwards)\n"
                  f"  ref: {row['ref']}\n  hyp: {row['text']}")
    print(json.dumps(report, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "vla":
        from .pipelines.bench_vla import DELAYS_MS
        from .pipelines.bench_vla import main as bench_vla
        from .pipelines.chunking import MODES

        modes = tuple(args.modes.split(",")) if args.modes else MODES
        bad = sorted(set(modes) - set(MODES))
        if bad:
            raise ValueError(f"unknown mode(s) {bad}; known: {', '.join(MODES)}")
        bench_vla(args.model or "tiny-vla", args.json, args.episodes,
                  tuple(args.delays) if args.delays else DELAYS_MS, modes, args.hz, args.plot, args.max_inflight,
                  args.execute, args.margin)
        return 0
    if args.what == "asr":
        import glob

        from .pipelines.bench_asr import main as bench_asr

        shards = sorted(glob.glob(args.shards)) if args.shards else sorted(glob.glob("runs/data/speech/test-*.tar"))
        if not shards:
            raise FileNotFoundError("no held-out shards: run `unmask data speech` (writes runs/data/speech/test-*.tar) "
                                    "or pass --shards 'DIR/test-*.tar'")
        methods = args.methods.split(",") if args.methods else None
        bench_asr(shards, args.model or "tiny-asr",
                  tuple(methods) if methods else ("from_mask", "prior_guided", "ctc", "faster_whisper"),
                  args.limit, args.asr_batch_size, args.json)
        return 0
    from .pipelines.bench_decode import BenchConfig, main

    cfg = BenchConfig(gen_lengths=tuple(args.gen_lengths), batch_sizes=tuple(args.batch_sizes),
                      block_length=args.block_length, n_per_task=args.n_per_task, device=args.device,
                      compile=args.compile, fixed_tpf=tuple(args.fixed_tpf))
    main(args.model or "tiny-text", cfg, args.json, args.plot, quick=args.quick, markdown_path=args.markdown,
         command="unmask " + " ".join(sys.argv[1:]),
         policies=args.policies.split(",") if args.policies else None,
         caches=args.caches.split(",") if args.caches else None)
    return 0


def cmd_robot_serve(args: argparse.Namespace) -> int:
    from .modalities.action.model import load_policy
    from .pipelines.policy_server import PolicyServer

    server = PolicyServer(load_policy(args.model), args.host, args.port, args.delay_ms)
    print(f"serving {args.model} on ws://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


def cmd_robot_run(args: argparse.Namespace) -> int:
    from .pipelines.chunking import BrokerConfig
    from .pipelines.robot_runtime import RunConfig, run_episodes

    def show(r: dict) -> None:
        if not args.json:
            print(f"seed {r['seed']}: success={r['success']} ticks={r['ticks']} hz={r['hz']:.1f} "
                  f"missed={r['missed_ticks']} overruns={r['overruns']} events={len(r['events'])}")

    summary, rows = run_episodes(args.server, BrokerConfig(mode=args.mode, execute=args.execute,
                                                           max_inflight=args.max_inflight, margin=args.margin),
                                 RunConfig(hz=args.hz, timeout_s=args.timeout, max_steps=args.max_steps),
                                 range(args.seed, args.seed + args.episodes), model=args.model,
                                 delay_ms=args.delay_ms, on_episode=show)
    print(json.dumps({"summary": summary, "episodes": rows} if args.json else summary))
    return 0


def cmd_eval_vlm(args: argparse.Namespace) -> int:
    from .pipelines.vlm_eval import SWEEP, TASKS, EvalOptions, evaluate, plot_sweep

    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    prunes = ["none", *SWEEP] if args.sweep else (args.prune or ["none"])
    opts = EvalOptions(policy=args.policy, tokens_per_step=args.tokens_per_step, cache=args.cache,
                       batch_size=args.batch_size, elbo_samples=args.elbo_samples)
    report = evaluate(args.model, tasks, args.data, prunes, opts, args.limit, args.out, args.device, args.blind)
    if args.sweep or args.plot:
        report["plot"] = str(plot_sweep(report, args.plot or Path(args.out) / "sweep.png"))
    report["predictions"] = str(Path(args.out) / "predictions.jsonl")
    if args.json:
        print(json.dumps(report))
    else:
        for r in report["results"]:
            prune = r["prune"] + (" (shuffled images)" if r["images"] == "shuffled" else "")
            print(f"{r['task']:8s} {prune:60s} acc {r['accuracy']}  latency {r['latency_s']:.3f} s  "
                  f"nfe {r['nfe']}  visual tokens {r['visual_tokens']}")
        print(f"predictions: {report['predictions']}" + (f"; plot: {report['plot']}" if "plot" in report else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .pipelines.chunking import BrokerConfig

    ap = argparse.ArgumentParser(prog="unmask", description="masked-diffusion language models, one decoding core")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate text from prompts")
    _sampling_args(g)
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    g.add_argument("--prompts-file", default=None, help="file with one prompt per line")
    g.add_argument("--json", action="store_true")
    g.set_defaults(fn=cmd_generate)
    e = sub.add_parser("eval", help="held-out exact-match of a text model on the generated tasks")
    e.add_argument("what", choices=["text"])
    _sampling_args(e)
    e.add_argument("--n-per-task", type=int, default=50)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)
    bn = sub.add_parser("bench", help="benchmarks printed side by side in one run")
    bn.add_argument("what", choices=["decode", "asr", "vla"])
    bn.add_argument("--model", default=None, help="default: tiny-text (decode), tiny-asr (asr), tiny-vla (vla)")
    bn.add_argument("--device", default="cpu")
    bn.add_argument("--gen-lengths", type=int, nargs="+", default=[64, 256])
    bn.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    bn.add_argument("--block-length", type=int, default=32)
    bn.add_argument("--n-per-task", type=int, default=10)
    bn.add_argument("--plot", default=None, help="write the accuracy vs tokens/s Pareto plot to this PNG")
    bn.add_argument("--json", action="store_true")
    bn.add_argument("--markdown", default=None, help="also write the results as a Markdown table to this file")
    bn.add_argument("--quick", action="store_true", help="baseline and threshold, no cache and dual cache only")
    bn.add_argument("--policies", default=None, help="comma-separated subset of the policy grid")
    bn.add_argument("--caches", default=None, help="comma-separated subset of none,prefix,dual,feature")
    bn.add_argument("--compile", action="store_true", help="torch.compile the backbone (dynamic shapes) first")
    bn.add_argument("--fixed-tpf", type=int, nargs="+", default=[1], metavar="K",
                    help="decode: tokens per forward for low_confidence (steps = gen length / K), one row per K")
    bn.add_argument("--shards", default=None, help="asr: glob of held-out shards (default runs/data/speech/test-*.tar)")
    bn.add_argument("--methods", default=None, help="asr: comma-separated subset of from_mask,prior_guided,ctc,"
                    "faster_whisper")
    bn.add_argument("--limit", type=int, default=None, help="asr: first N clips only")
    bn.add_argument("--asr-batch-size", type=int, default=1, help="asr: clips per decode for our methods")
    bn.add_argument("--episodes", type=int, default=200, help="vla: seeded held-out episodes per mode and delay")
    bn.add_argument("--delays", type=float, nargs="+", default=None, help="vla: injected delays in ms (0 50 100 200)")
    bn.add_argument("--modes", default=None, help="vla: comma-separated subset of sync,async,async_inpaint")
    bn.add_argument("--hz", type=float, default=50.0, help="vla: control rate")
    bn.add_argument("--max-inflight", type=int, default=8, help="vla: most requests in flight in the async modes")
    bn.add_argument("--margin", type=int, default=BrokerConfig.margin,
                    help="vla: ticks of queue kept beyond the expected delay when a request starts (async modes; "
                    "slack for a reply slower than the recent ones)")
    bn.add_argument("--execute", type=int, default=None, help="vla: actions run per chunk before the next takes over "
                    "(default: 8 for sync, 2 for the async modes)")
    bn.set_defaults(fn=cmd_bench)
    tr = sub.add_parser("transcribe", help="batch transcription of audio shards/files on Ray")
    tr.add_argument("input", nargs="+", help="WebDataset shards (*.tar), a directory or a glob of audio files")
    tr.add_argument("--out", required=True, help="output directory (transcripts.parquet/.jsonl, errors, report)")
    tr.add_argument("--model", default="tiny-asr")
    tr.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start a local Ray)")
    tr.add_argument("--actors", type=int, default=1, help="model replicas (Ray actors)")
    tr.add_argument("--gpus-per-actor", type=float, default=0.0)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--method", default="prior_guided", help="prior_guided, from_mask or ctc")
    tr.add_argument("--policy", default="threshold")
    tr.add_argument("--threshold", type=float, default=0.9)
    tr.add_argument("--prior-threshold", type=float, default=0.5)
    tr.add_argument("--slack", type=int, default=0)
    tr.add_argument("--gen-length", type=int, default=64, help="canvas length of from_mask")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.add_argument("--show", type=int, default=0, help="print the first N transcripts with their references")
    tr.set_defaults(fn=cmd_transcribe)
    ev = sub.add_parser("eval-vlm", help="VLM evaluation on held-out scene questions, with visual-token pruning")
    ev.add_argument("--model", default="tiny-vlm")
    ev.add_argument("--tasks", default="short,mc,long", help="comma-separated subset of short,mc,mc_elbo,long")
    ev.add_argument("--data", default=None, help="manifest JSONL from `unmask data vision` (default: shipped sample)")
    ev.add_argument("--prune", action="append", default=None,
                    help="none | fastv:layer=K,ratio=R[,schedule=first|late|progressive,start=S,ramp=N] | "
                    "divprune:layer=K,ratio=R[,...] | vtw:layer=K; repeat it to compare settings side by side "
                    "(each batch decoded under every one in turn, as --sweep does)")
    ev.add_argument("--sweep", action="store_true", help="every task unpruned and under each pruning setting, plotted")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--policy", default="low_confidence")
    ev.add_argument("--tokens-per-step", type=int, default=2)
    ev.add_argument("--cache", default="none")
    ev.add_argument("--elbo-samples", type=int, default=8)
    ev.add_argument("--limit", type=int, default=None, help="first N items per task")
    ev.add_argument("--blind", action="store_true", help="also run each task with every question given another "
                    "scene's image (rows with \"images\": \"shuffled\"): does the model read its images?")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", default="runs/eval-vlm", help="directory for predictions.jsonl (and sweep.png)")
    ev.add_argument("--plot", default=None, help="accuracy vs latency PNG (default OUT/sweep.png with --sweep)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(fn=cmd_eval_vlm)
    rb = sub.add_parser("robot", help="action-chunk policy server and real-time control loop")
    rsub = rb.add_subparsers(dest="robot_cmd", required=True)
    sv = rsub.add_parser("serve", help="serve a policy over websocket + msgpack")
    sv.add_argument("--model", default="tiny-vla")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless told otherwise)")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--delay-ms", type=float, default=0.0, help="extra delay before every reply")
    sv.set_defaults(fn=cmd_robot_serve)
    rr = rsub.add_parser("run", help="run PushBlock episodes in real time against a policy server")
    rr.add_argument("--env", default="pushblock", choices=["pushblock"])
    rr.add_argument("--hz", type=float, default=50.0)
    rr.add_argument("--server", default=None, help="ws://HOST:PORT (default: serve --model in-process on loopback)")
    rr.add_argument("--model", default="tiny-vla", help="policy served in-process when --server is not given")
    rr.add_argument("--delay-ms", type=float, default=0.0, help="in-process server: extra delay per reply")
    rr.add_argument("--mode", default="async_inpaint", help="sync, async or async_inpaint")
    rr.add_argument("--execute", type=int, default=None, help="actions per chunk before the next takes over "
                    "(default: 8 for sync, 2 for the async modes)")
    rr.add_argument("--max-inflight", type=int, default=8,
                    help="async modes: most requests in flight (one connection each) when the delay exceeds the "
                    "replanning interval")
    rr.add_argument("--margin", type=int, default=BrokerConfig.margin,
                    help="async modes: ticks of queue kept beyond the expected delay when a request starts")
    rr.add_argument("--episodes", type=int, default=5)
    rr.add_argument("--seed", type=int, default=100_000)
    rr.add_argument("--timeout", type=float, default=0.5, help="seconds without a reply before reconnecting")
    rr.add_argument("--max-steps", type=int, default=400, help="episode limit in control ticks")
    rr.add_argument("--json", action="store_true")
    rr.set_defaults(fn=cmd_robot_run)
    d = sub.add_parser("data", help="generate a reference dataset offline")
    d.add_argument("what", choices=["speech", "vision", "robot"])
    d.add_argument("--out", default=None, help="default runs/data/speech, runs/data/vision or runs/data/robot")
    d.add_argument("--n-train", type=int, default=None, help="speech: clips (8000); vision: items per task (0: the "
                   "VLM recipe generates its training scenes on the fly)")
    d.add_argument("--n-test", type=int, default=None, help="speech: clips (300); vision: items per task (200)")
    d.add_argument("--per-shard", type=int, default=500)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--episodes", type=int, default=500, help="robot: expert demonstrations")
    d.add_argument("--images", action="store_true", help="robot: also store a 64x64 rendered image per frame")
    d.set_defaults(fn=cmd_data)
    sub.add_parser("models", help="list shipped models").set_defaults(fn=cmd_models)
    sub.add_parser("policies", help="list unmasking policies and caches").set_defaults(fn=cmd_policies)
    t = sub.add_parser("train", help="train a reference model from its recipe")
    t.add_argument("what", choices=["text", "asr", "vlm", "vla"])
    t.add_argument("--config", default=None)
    t.add_argument("--out", default=None)
    t.add_argument("--steps", type=int, default=None)
    t.set_defaults(fn=cmd_train)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError, FileNotFoundError, ConnectionError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"unmask {args.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
