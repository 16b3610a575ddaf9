"""Golden outputs of the pipeline: sha256 of every file ``srp label`` and ``srp render`` write, and a loss curve.

Runs the real commands in-process through ``srp_megatron.cli.main`` on two corpora generated here:

- ``demo``: the demo corpus (``srp_megatron.prep.demo_corpus``) with the demo's three broken records;
- ``bad``: a directory of inputs with bad records of every kind the reader counts (malformed JSON, missing,
  empty, null and non-string text, blank lines, an oversized document, a truncated ``.gz``, a Parquet file),
  plus pre-labelled rows read by the ``oracle`` labeler (segments with rewrites, for the ``rewrite`` arm).

Every render arm (srp, raw, filter at segment and document level, rewrite from the column, tag), both templates
(paper, special) and the three controversial modes are rendered, plus a two-shard label and render; then
``srp pretrain tiny-cpu`` trains 20 steps on the demo's srp arm (one thread, so the numbers are reproducible).
The segmenter's boundary rule is given explicitly, so a later change of the default keeps these outputs.

    python bench/golden_outputs.py --out golden.json                 # record
    python bench/golden_outputs.py --compare tests/assets/golden/layout_v1.json   # check: exit 1 on a difference

Paths of the temporary work directory inside JSON files (PREFIX.json, stats, manifest) are replaced by
``<WORK>`` before hashing; all other bytes are hashed as written.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile

import yaml

#: The paper's sentence boundary rule (the segmenter's default when these outputs were recorded).
BOUNDARY_REGEX = r"[.?!。？！\n]+\s*"
#: (name, arguments of srp render after LABELS_DIR) for the keyword-labelled corpora.
RENDERS = [
    ("srp", ["--arm", "srp"]),
    ("srp_special", ["--arm", "srp", "--template", "special"]),
    ("srp_loose", ["--arm", "srp", "template.controversial=loose"]),
    ("srp_keep", ["--arm", "srp", "template.controversial=keep"]),
    ("raw", ["--arm", "raw"]),
    ("filter", ["--arm", "filter"]),
    ("filter_document", ["--config", "filter_document"]),
    ("filter_unsafe", ["--arm", "filter", "filter.drop=[unsafe]"]),
    ("tag", ["--arm", "tag"]),
    ("tag_special", ["--arm", "tag", "--template", "special", "template.controversial=keep"]),
]
#: Renders of the oracle-labelled rows (which carry rewrites).
ORACLE_RENDERS = [
    ("srp", ["--arm", "srp"]),
    ("rewrite", ["--arm", "rewrite", "rewrite.source=column"]),
    ("rewrite_keep", ["--arm", "rewrite", "rewrite.missing=keep", "rewrite.replace=[unsafe]"]),
]
#: Files compared by the unit test (data, not metadata: stats and manifests record the config, which may grow).
DATA_SUFFIXES = (".parquet", ".bin", ".idx")


def _srp(*argv: str) -> None:
    from srp_megatron.cli import main

    rc = main(["--log-level", "WARNING", *argv])
    if rc != 0:
        raise SystemExit(f"srp {' '.join(argv)}: exit {rc}")


def write_demo_corpus(path: str, num_docs: int) -> None:
    """The demo corpus plus the demo's broken records."""
    from srp_megatron.prep.demo_corpus import demo_documents

    with open(path, "w", encoding="utf-8") as f:
        for row in demo_documents(num_docs, seed=0, cjk_share=0.05):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.write('{"id": "broken", "text": "unterminated\n')
        f.write(json.dumps({"id": "empty", "text": ""}) + "\n")
        f.write(json.dumps({"id": "no-text", "body": "wrong field"}) + "\n")


def write_bad_corpus(folder: str, num_docs: int) -> None:
    """Inputs with every kind of bad record and file, around good demo documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from srp_megatron.prep.demo_corpus import demo_documents

    os.makedirs(folder, exist_ok=True)
    docs = list(demo_documents(num_docs, seed=11, cjk_share=0.1))
    third = len(docs) // 3
    with open(os.path.join(folder, "a.jsonl"), "w", encoding="utf-8") as f:
        for i, row in enumerate(docs[:third]):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if i == 3:
                f.write('{"id": "bad-json", "text": "no closing\n')
                f.write("\n   \n")  # blank lines
                f.write(json.dumps({"id": "no-text", "body": "x"}) + "\n")
                f.write(json.dumps({"id": "null-text", "text": None}) + "\n")
                f.write(json.dumps({"id": "int-text", "text": 42}) + "\n")
                f.write(json.dumps({"id": "list-text", "text": ["a", "b"]}) + "\n")
                f.write(json.dumps({"id": "empty", "text": ""}) + "\n")
                f.write(json.dumps({"id": "space", "text": "   "}) + "\n")
                f.write("[1, 2, 3]\n")  # not an object
                f.write(json.dumps({"id": "huge", "text": "word. " * 20000}) + "\n")  # > reader.max_doc_chars
    with open(os.path.join(folder, "a.jsonl"), "ab") as f:
        f.write(b'{"id": "bad-utf8", "text": "\xff\xfe"}\n')  # not UTF-8
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in docs[third : 2 * third]).encode()
    blob = gzip.compress(payload, mtime=0)
    with open(os.path.join(folder, "b.jsonl.gz"), "wb") as f:
        f.write(blob[: len(blob) * 2 // 3])  # truncated: the records before the cut are kept
    rows = docs[2 * third :]
    table = pa.table({"id": [r["id"] for r in rows] + ["pq-null"], "text": [r["text"] for r in rows] + [None]})
    pq.write_table(table, os.path.join(folder, "c.parquet"))


def write_oracle_corpus(path: str) -> None:
    """Pre-labelled rows: segments with labels, categories and rewrites (some missing), and bad rows."""
    rows = []
    for i in range(40):
        segs = [
            {"text": f"Document {i} begins with a calm sentence. ", "label": "safe"},
            {"text": f"Then it says something risky number {i}. ", "label": "unsafe", "categories": ["Violent"],
             "rewrite": f"Then it says something harmless number {i}." if i % 3 else None},
            {"text": "It may be debatable.", "label": "controversial", "rewrite": "It is fine." if i % 2 else ""},
        ]
        rows.append({"id": f"o{i}", "segments": segs})
    rows.append({"id": "doc-label", "text": "A whole document labelled at once. Two sentences.", "label": "unsafe"})
    rows.append({"id": "bad-label", "segments": [{"text": "x", "label": "maybe"}]})
    rows.append({"id": "no-label", "text": "Nothing says what this is."})
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _hash_file(path: str, work: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".json"):
        data = data.replace(os.path.realpath(work).encode(), b"<WORK>").replace(work.encode(), b"<WORK>")
    return hashlib.sha256(data).hexdigest()


def hash_tree(folder: str, work: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (run directories and caches excluded)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in ("run", "data_cache"))
        for name in sorted(files):
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = _hash_file(path, work)
    return out


def _label_and_render(work: str, name: str, inputs: list[str], tokenizer: str, extra: list[str],
                      renders: list[tuple[str, list[str]]]) -> None:
    labels = os.path.join(work, name, "labels")
    _srp("label", *inputs, "--out", labels, "--no-progress", *extra)
    for rname, args in renders:
        _srp("render", labels, "--tokenizer", tokenizer, "--out", os.path.join(work, name, "data", rname),
             "progress=false", *args)


def _loss_curve(work: str, prefix: str, tokenizer: str, steps: int) -> dict:
    """Train tiny-cpu ``steps`` steps on one thread; the logged losses per step (train and valid)."""
    import torch

    torch.set_num_threads(1)
    run_dir = os.path.join(work, "run")
    _srp("pretrain", "tiny-cpu", f"data.paths=[{prefix}]", f"data.tokenizer={tokenizer}",
         f"training.train_iters={steps}", f"training.eval_interval={steps // 2}", f"logging.run_dir={run_dir}",
         "logging.log_interval=1", "logging.tensorboard=false", "checkpoint.save_at_end=false")
    curve: dict[str, list] = {"train": [], "valid": []}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for rec in map(json.loads, f):
            losses = {k: v for k, v in rec.items() if k.startswith("loss/")}
            curve[rec["split"]].append({"step": rec["step"], **dict(sorted(losses.items()))})
    return curve


def golden(work: str, docs: int = 1200, bad_docs: int = 300, steps: int = 20) -> dict:
    """Run every stage in ``work`` and return the hashes and the loss curve."""
    from srp_megatron.prep.demo_corpus import demo_documents
    from srp_megatron.prep.tokenizer import train_bpe_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = train_bpe_tokenizer((d["text"] for d in demo_documents(docs, seed=0, cjk_share=0.05)),
                                    os.path.join(work, "tokenizer"), vocab_size=2048)
    seg = os.path.join(work, "segmenter.yaml")
    with open(seg, "w", encoding="utf-8") as f:
        yaml.safe_dump({"segmenter": {"boundary_regex": BOUNDARY_REGEX}}, f, allow_unicode=True)
    common = ["--config", seg]
    write_demo_corpus(os.path.join(work, "demo.jsonl"), docs)
    write_bad_corpus(os.path.join(work, "bad_inputs"), bad_docs)
    write_oracle_corpus(os.path.join(work, "oracle.jsonl"))
    keyword = ["--labeler", "keyword", "--docs-per-unit", "250", *common]
    _label_and_render(work, "demo", [os.path.join(work, "demo.jsonl")], tokenizer, keyword, RENDERS)
    _label_and_render(work, "bad", [os.path.join(work, "bad_inputs")], tokenizer,
                      [*keyword, "--docs-per-unit", "90", "reader.max_doc_chars=50000"], RENDERS)
    _label_and_render(work, "oracle", [os.path.join(work, "oracle.jsonl")], tokenizer,
                      ["--labeler", "oracle", "--docs-per-unit", "16", *common], ORACLE_RENDERS)
    sharded = os.path.join(work, "sharded", "labels")
    for k in range(2):
        _srp("label", os.path.join(work, "demo.jsonl"), "--out", sharded, "--no-progress", *keyword,
             "--num-shards", "2", "--shard-index", str(k))
    for k in range(2):
        out = os.path.join(work, "sharded", "data", "srp_{shard}")
        _srp("render", sharded, "--tokenizer", tokenizer, "--out", out, "--num-shards", "2", "--shard-index", str(k),
             "progress=false")
    files = {}
    for name in ("demo", "bad", "oracle", "sharded"):
        files.update({f"{name}/{k}": v for k, v in hash_tree(os.path.join(work, name), work).items()})
    files.update({f"tokenizer/{k}": v for k, v in hash_tree(tokenizer, work).items()})
    curve = _loss_curve(work, os.path.join(work, "demo", "data", "srp"), tokenizer, steps) if steps else {}
    return {"params": {"docs": docs, "bad_docs": bad_docs, "steps": steps}, "files": files, "loss_curve": curve}


def compare(got: dict, want: dict, data_only: bool = False) -> list[str]:
    """Differences between two golden records (files missing, extra or changed; loss curve)."""
    def keep(path: str) -> bool:
        return not data_only or path.endswith(DATA_SUFFIXES)

    diffs = []
    g, w = {k: v for k, v in got["files"].items() if keep(k)}, {k: v for k, v in want["files"].items() if keep(k)}
    diffs += [f"missing: {k}" for k in sorted(set(w) - set(g))]
    diffs += [f"extra: {k}" for k in sorted(set(g) - set(w))]
    diffs += [f"changed: {k}" for k in sorted(set(g) & set(w)) if g[k] != w[k]]
    if got["loss_curve"] != want["loss_curve"]:
        diffs.append("loss curve differs")
    return diffs


def main() -> int:
    """Record or compare the golden outputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the record here")
    parser.add_argument("--compare", metavar="JSON", help="compare with this record; exit 1 on a difference")
    parser.add_argument("--work", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="srp-golden-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        want = None
        if args.compare:
            with open(args.compare, encoding="utf-8") as f:
                want = json.load(f)
        params = want["params"] if want else {}
        record = golden(work, **params)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
    print(f"{len(record['files'])} files hashed; {len(record['loss_curve'].get('train', []))} training steps")
    if want is not None:
        diffs = compare(record, want)
        for d in diffs:
            print(d)
        print("identical" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
