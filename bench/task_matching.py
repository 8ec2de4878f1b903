"""How similar paraphrases of the default model's tasks, and unrelated instructions, are to the tasks it knows: the
measurement behind SARM_TASK_MATCH_MIN (the gateway refuses an instruction below it).

Similarity is what the gateway computes: the cosine between the instruction's embedding and each known task's, by
the model's own text encoder; an instruction matches its most similar task. Prints a table, writes
bench/results/task_matching.json, and the threshold halfway between the lowest paraphrase and the highest unrelated
instruction.

    .venv/bin/python -m bench.task_matching
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sarm.encoders.registry import load_text_encoder
from sarm.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
# Written for this measurement: how people word the three development tasks (task instruction → paraphrases).
PARAPHRASES = {
    "Pick up the puck and place it at the goal.": [
        "pick up the puck and put it on the goal",
        "Grab the puck and move it to the goal position.",
        "place the puck at the target",
        "pick the puck and place it at the goal",
        "lift the puck and set it down at the goal",
        "move the puck to the goal",
        "pick and place the puck onto the goal marker",
        "Pick up the hockey puck and drop it at the goal.",
        "carry the puck over to the goal and release it",
        "put the puck at the goal location",
    ],
    "Pick up the nut and put it onto the peg.": [
        "pick up the nut and place it on the peg",
        "Grab the nut and put it on the peg.",
        "put the nut onto the peg",
        "assemble the nut onto the peg",
        "lift the ring nut and slide it over the peg",
        "place the nut over the peg",
        "pick the nut up and fit it on the peg",
        "thread the nut onto the peg",
    ],
    "Pick up the peg and insert it sideways into the hole.": [
        "pick up the peg and insert it into the hole",
        "insert the peg sideways into the hole",
        "Grab the peg and push it into the side hole.",
        "put the peg into the hole from the side",
        "pick the peg and slide it sideways into the hole",
        "take the peg and insert it horizontally into the hole",
        "peg insertion from the side",
    ],
}
# Instructions for tasks the default model was never trained on, a typo'd one, and noise.
UNRELATED = [
    "fold the t-shirt",
    "Open the drawer.",
    "close the door",
    "wipe the table with the sponge",
    "pour water into the cup",
    "stack the red block on the blue block",
    "turn on the light switch",
    "press the button",
    "open the window",
    "hang the towel on the hook",
    "push the mug to the left",
    "put the dishes in the sink",
    "unplug the cable",
    "sweep the floor",
    "water the plants",
    "screw the lid onto the jar",
    "flip the pancake",
    "tie the shoelaces",
    "hammer the nail",
    "slide the book onto the shelf",
    "pick up the phone",
    "asdf qwerty",
    "hello",
    "stop",
]


def similarities(encoder_texts: list[str], tasks: list[str], text_encoder: object) -> np.ndarray:
    """(len(texts), len(tasks)) cosine similarities."""
    encode = text_encoder.encode  # type: ignore[attr-defined]
    a = np.asarray(encode(encoder_texts), np.float64)
    b = np.asarray(encode(tasks), np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT / ".cache" / "model_repo" / "default")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "task_matching.json")
    args = parser.parse_args()
    manifest = read_manifest(args.repo)
    tasks = [t.instruction for t in manifest.tasks]
    encoder = load_text_encoder(manifest.text_encoder.id)
    rows = []
    paraphrases = [(task, text) for task, texts in PARAPHRASES.items() for text in texts]
    sims = similarities([text for _, text in paraphrases] + UNRELATED, tasks, encoder)
    for i, (intended, text) in enumerate(paraphrases):
        best = int(sims[i].argmax())
        rows.append(
            {
                "instruction": text,
                "kind": "paraphrase",
                "intended": intended,
                "matched": tasks[best],
                "similarity": float(sims[i, best]),
            }
        )
    for j, text in enumerate(UNRELATED):
        k = len(paraphrases) + j
        best = int(sims[k].argmax())
        rows.append(
            {
                "instruction": text,
                "kind": "unrelated",
                "intended": None,
                "matched": tasks[best],
                "similarity": float(sims[k, best]),
            }
        )
    lowest_paraphrase = min(r["similarity"] for r in rows if r["kind"] == "paraphrase")
    highest_unrelated = max(r["similarity"] for r in rows if r["kind"] == "unrelated")
    threshold = round((lowest_paraphrase + highest_unrelated) / 2, 2)
    right_task = sum(r["matched"] == r["intended"] for r in rows if r["kind"] == "paraphrase")
    table = Table(title=f"instruction similarity to the default model's tasks ({manifest.text_encoder.id})")
    for column in ("kind", "instruction", "matched task", "similarity", f"≥ {threshold}"):
        table.add_column(column)
    for r in sorted(rows, key=lambda r: -r["similarity"]):
        table.add_row(
            r["kind"],
            r["instruction"],
            r["matched"][:32],
            f"{r['similarity']:.3f}",
            "accept" if r["similarity"] >= threshold else "refuse",
        )
    console = Console(width=150)
    console.print(table)
    summary = {
        "text_encoder": manifest.text_encoder.fingerprint,
        "tasks": tasks,
        "paraphrases": len(paraphrases),
        "unrelated": len(UNRELATED),
        "lowest_paraphrase": lowest_paraphrase,
        "highest_unrelated": highest_unrelated,
        "separable": lowest_paraphrase > highest_unrelated,
        "threshold": threshold,
        "paraphrases_matched_to_their_task": right_task,
        "accepted_paraphrases": sum(r["similarity"] >= threshold for r in rows if r["kind"] == "paraphrase"),
        "refused_unrelated": sum(r["similarity"] < threshold for r in rows if r["kind"] == "unrelated"),
    }
    console.print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
