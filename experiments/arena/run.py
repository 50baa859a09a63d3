"""An arena over three models, judged by the arithmetic task's grader through the real page.

    python experiments/arena/run.py                       # 60 battles, writes experiments/arena/
    python experiments/arena/run.py --battles 10 --out /tmp/arena   # quick

It starts `python -m evals arena` over the models below, opens its page in headless Chromium
(Debian's, driven by playwright) and, for each held-out arithmetic problem, types the question,
presses Battle, reads the two anonymous answers from the page, grades each with the task's grader
and presses the vote a careful human would: the correct answer beats a wrong one, two correct
answers are a "tie", two wrong ones "tie (bothbad)". Then it exports the votes database as
FastChat battles JSONL, rates them with `python -m evals ratings` (Bradley-Terry, bootstrap
intervals, win-rate plot), and screenshots the arena page, its leaderboard and the web chat of
`python -m infer serve`.

Models (train them first; see the README beside this file):
    demo           runs/demo              `make demo`'s pretrained model (no chat training)
    smollm2-arith  runs/smollm2-arith     SmolLM2 + LoRA SFT on 2-digit + and - (no tool)
    smollm2        smollm2                SmolLM2-135M-Instruct as shipped
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from evals import harness
from experiments.server_process import free_port, start, stop

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"demo": "runs/demo", "smollm2-arith": "runs/smollm2-arith", "smollm2": "smollm2"}
DIGITS, OPS = (2, 2), "+-"
# the servers run without the caller's XLA_FLAGS (a simulated device count would slow them)
SERVER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def verdict(correct_a: bool, correct_b: bool) -> str:
    """The judge's vote: correct beats wrong; two right answers tie, two wrong are both bad."""
    if correct_a != correct_b:
        return "model_a" if correct_a else "model_b"
    return "tie" if correct_a else "tie (bothbad)"


def judge(page, url: str, items, task, shots: Path, progress) -> list[dict]:
    """Casts one vote per item through the arena page; returns what it saw and voted."""
    page.goto(url)
    seen = []
    for i, item in enumerate(items):
        question = item.prompt[0]["content"]
        page.fill("#prompt", question)
        page.click("#go")
        page.wait_for_selector("button[data-winner='model_a']:enabled", timeout=300_000)
        answer_a, answer_b = page.text_content("#answer_a"), page.text_content("#answer_b")
        correct = (task.grade(item, answer_a) == 1.0, task.grade(item, answer_b) == 1.0)
        winner = verdict(*correct)
        page.click(f"button[data-winner='{winner}']")
        page.wait_for_selector("#name_a.revealed")
        names = [page.text_content(f"#name_{s}").split(": ", 1)[1] for s in "ab"]
        if i == 0:
            page.screenshot(path=str(shots / "arena.png"), full_page=True)
        seen.append({"prompt": question, "reference": item.reference, "model_a": names[0],
                     "model_b": names[1], "correct_a": correct[0], "correct_b": correct[1],
                     "winner": winner})
        progress.update(1)
    return seen


def compact(db: Path) -> None:
    """Folds the write-ahead log into the database file and leaves WAL mode, so the votes are
    one self-contained file to commit (the arena writes in WAL mode while it runs)."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()


def export_battles(db: Path, out: Path) -> int:
    """The votes as FastChat battle lines ({model_a, model_b, winner, tstamp, question}),
    written atomically."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    rows = con.execute("SELECT model_a, model_b, winner, tstamp, prompt FROM votes "
                       "ORDER BY id").fetchall()
    con.close()
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for a, b, winner, tstamp, prompt in rows:
            f.write(json.dumps({"model_a": a, "model_b": b, "winner": winner,
                                "tstamp": tstamp, "question": prompt}) + "\n")
    os.replace(tmp, out)
    return len(rows)


def accuracy(seen: list[dict]) -> dict:
    """Per model: answers graded correct out of answers given, with a 95% Wilson interval."""
    from evals import stats

    table = {}
    for side in "ab":
        for row in seen:
            name = row[f"model_{side}"]
            right, n = table.get(name, (0, 0))
            table[name] = (right + row[f"correct_{side}"], n + 1)
    return {name: {"correct": right, "answers": n,
                   "wilson95": list(stats.wilson(right, n))} for name, (right, n) in
            sorted(table.items())}


def chat_screenshot(browser, model: str, path: Path, log: Path) -> None:
    """The web chat of `python -m infer serve --model MODEL`, one question answered."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "infer", "serve", "--model", model, "--port",
                  str(port), "--weights", "int8"], url, log, env=SERVER_ENV)
    try:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")
        page.fill("#temperature", "0")
        page.fill("#input", "What is 47 + 38?")
        page.press("#input", "Enter")
        page.wait_for_selector(".assistant", state="attached")
        page.wait_for_selector("#send:enabled", timeout=300_000)
        page.screenshot(path=str(path), full_page=True)
        page.close()
    finally:
        stop(proc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--battles", type=int, default=60)
    p.add_argument("--out", default=str(Path(__file__).parent))
    p.add_argument("--seed", type=int, default=1, help="which held-out problems")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--force", action="store_true", help="replace an existing votes database")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright
    from tqdm import tqdm

    from evals import tasks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [src for src in MODELS.values() if src != "smollm2" and not (ROOT / src).exists()]
    if missing:
        raise SystemExit(f"missing {missing}; train them first (experiments/arena/README.md)")
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    db = out / "votes.sqlite"
    if db.exists():
        if not args.force:
            raise SystemExit(f"{db} exists; pass --force to start a new arena")
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    task = tasks.get("arithmetic", digits=DIGITS, ops=OPS)
    items = task.items(args.battles, seed=args.seed)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [f for name, src in MODELS.items() for f in ("--model", f"{name}={src}")]
    arena = start([sys.executable, "-m", "evals", "arena", *flags, "--db", str(db), "--port",
                   str(port), "--max-new-tokens", str(args.max_new_tokens), "--weights", "int8"],
                  url, Path("/tmp/arena_experiment.log"), env=SERVER_ENV)
    t0 = time.perf_counter()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            with tqdm(total=len(items), desc="battles", unit="battle") as progress:
                seen = judge(page, url, items, task, out, progress)
            page.goto(url + "/leaderboard")
            page.wait_for_selector("#ratings:not([hidden])")
            page.screenshot(path=str(out / "leaderboard.png"), full_page=True)
            stop(arena)
            chat_screenshot(browser, MODELS["smollm2-arith"], out / "chat.png",
                            Path("/tmp/arena_experiment_chat.log"))
            browser.close()
    finally:
        if arena.poll() is None:
            stop(arena)
    seconds = time.perf_counter() - t0
    compact(db)
    n = export_battles(db, out / "battles.jsonl")
    subprocess.run([sys.executable, "-m", "evals", "ratings", "--battles",
                    str(out / "battles.jsonl"), "--json", str(out / "ratings.json"), "--plot",
                    str(out / "ratings.png"), "--bootstrap", str(args.bootstrap), "--force"],
                   cwd=ROOT, check=True)
    (out / "ratings.json").chmod(0o644)  # written private, like every harness output
    summary = {"battles": n, "seconds": round(seconds, 1), "task": {"name": "arithmetic",
               "digits": list(DIGITS), "ops": OPS, "seed": args.seed},
               "models": MODELS, "answers_correct": accuracy(seen), "judged": seen}
    harness.write_json(summary, out / "judge.json")
    for name, row in summary["answers_correct"].items():
        lo, hi = row["wilson95"]
        print(f"{name:<14} {row['correct']:3d}/{row['answers']:<3d} correct  "
              f"[{lo:.2f}, {hi:.2f}]")
    print(f"{n} battles in {seconds:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
