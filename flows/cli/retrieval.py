"""Retrieval commands: rank datasets or models for a prompt, and build the index files."""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
import json
from pathlib import Path

from p2m.flows.cli.common import count_of, flag_overrides, settings_for


def cmd_retrieve(args, kind: str) -> int:
    settings = settings_for(flag_overrides(args))
    from p2m.tasks.stages.parse import parse_prompt, read_prompt_file

    prompt = read_prompt_file(Path(args.spec), settings.parse.max_prompt_chars)
    teacher = None
    if prompt.spec is None or kind == "model":
        from p2m.tasks.teacher.handle import Teacher

        teacher = Teacher(settings)
    try:
        spec = parse_prompt(prompt, teacher.client() if teacher and prompt.spec is None else None)
        if kind == "datasets":
            from p2m.tasks.stages.retrieve_datasets import dataset_candidates, top_candidates

            records, embeddings, encoder = dataset_candidates(settings.datasets_dir, settings.datasets_index)
            ranked, _ = top_candidates(spec, records, settings.retrieval.top_k, embeddings, encoder)
        else:
            from p2m.tasks.stages.retrieve_model import hypothetical_card, model_candidates, model_pool, rank_models

            pool = model_pool(model_candidates(settings.models_dir, settings.models_index), settings.student, spec.kind)
            ranked = rank_models(f"{spec.instruction} {hypothetical_card(spec, teacher.client())}", pool)
    finally:
        if teacher:
            teacher.close()
    if args.json:
        print(json.dumps(ranked, indent=2))
    else:
        for c in ranked:
            print(f"{c['score']:>10}  {c['name']}")
    return 0


def cmd_index(args) -> int:
    settings_for({})
    from p2m.tasks.retrieval.index import check_hub_reachable, check_index_inputs

    check_index_inputs(args.out, args.datasets_dir, args.models_dir)  # before the flow's server starts
    if args.hub_limit:
        check_hub_reachable()  # before the minute spent on the local folders
    from p2m.flows.index_refresh import index_refresh_flow

    result = index_refresh_flow(
        out_dir=str(args.out),
        datasets_dir=str(args.datasets_dir) if args.datasets_dir else None,
        models_dir=str(args.models_dir) if args.models_dir else None,
        hub_limit=args.hub_limit,
        encoder=args.encoder,
    )
    d, m = result["datasets"], result["models"]
    print(
        f"{d['path']}: {d['count']} datasets ({d['embedded']} embedded, {d['reused']} reused, encoder {d['encoder']})"
    )
    print(f"{m['path']}: {m['count']} models")
    return 0


def register(sub, common) -> None:
    """Add this group's commands to the `p2m` subparsers `sub`; `common(parser)` adds the shared flags."""
    for kind in ("datasets", "model"):
        r = sub.add_parser(f"retrieve-{kind}", help=f"rank candidate {kind} for a prompt")
        r.add_argument("spec", type=Path)
        r.add_argument("--json", action="store_true", help="a JSON list, best first")
        common(r, generation=False)
        r.set_defaults(func=lambda a, k=kind: cmd_retrieve(a, k))

    index = sub.add_parser("index", help="build or refresh the retrieval index files")
    index.add_argument("--out", type=Path, required=True, help="folder for datasets.jsonl and models.jsonl")
    index.add_argument("--datasets-dir", type=Path)
    index.add_argument("--models-dir", type=Path)
    index.add_argument(
        "--hub-limit",
        type=count_of("Hub repos"),
        default=0,
        help="also index the N most downloaded Hub datasets and models (network: run with HF_HUB_OFFLINE=0)",
    )
    index.add_argument(
        "--encoder",
        choices=["minilm-static", "minilm"],
        default="minilm-static",
        help="dataset embeddings: minilm-static (100k in ~20 s) or minilm (best recall, ~1 h per 100k on 2 cores)",
    )
    index.set_defaults(func=cmd_index)
