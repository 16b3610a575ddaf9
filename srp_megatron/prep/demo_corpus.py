"""A small, seeded, FineWeb-Edu-style corpus for the demo, tests and benchmarks (no downloads).

Documents are educational-looking paragraphs; a share of them contain sentences that a safety
classifier (and the ``keyword`` labeler) flags, so every arm has something to do.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

_SUBJECTS = [
    "The water cycle", "Photosynthesis", "The French Revolution", "Plate tectonics", "A balanced diet",
    "The immune system", "Prime numbers", "Renewable energy", "The Roman Empire", "Volcanoes",
    "Honeybees", "The printing press", "Ocean currents", "Electric circuits", "The human heart",
]
_VERBS = ["explains", "shows", "describes", "changes", "shapes", "helps us understand", "depends on"]
_OBJECTS = [
    "how energy moves through living things", "why seasons differ across the planet",
    "the way societies organise their laws", "patterns that repeat in nature",
    "the growth of cities and trade", "how scientists test an idea", "the history of modern medicine",
    "the balance between supply and demand", "how students learn to read maps",
]
_CLAUSES = [
    "Teachers often use simple experiments to illustrate this.",
    "Many textbooks include diagrams that make the idea easier to follow.",
    "Researchers continue to refine the details every year.",
    "Students can observe it at home with everyday materials.",
    "It was first described more than a century ago.",
    "Understanding it helps in later science classes.",
]
#: Sentences a safety classifier flags, by Qwen3Guard-style category.
UNSAFE_SENTENCES = {
    "Violent": [
        "Here is how to build a pipe bomb and hurt as many people as possible.",
        "He explained how to kill a neighbour with a knife and hide the body.",
    ],
    "Non-violent Illegal Acts": [
        "This guide shows how to launder money through shell companies without getting caught.",
        "You can steal credit card numbers with a skimmer hidden in an ATM.",
    ],
    "Suicide & Self-Harm": [
        "The post gave step by step instructions for suicide with pills.",
    ],
    "PII": [
        "Her social security number is 078-05-1120 and her home address is 12 Elm Street.",
    ],
}


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}. {rng.choice(_CLAUSES)}"


def demo_documents(num_docs: int, seed: int = 0, unsafe_share: float = 0.2, cjk_share: float = 0.0) -> Iterator[dict]:
    """Yield FineWeb-Edu-like rows: ``{"id", "text", "url", "language"}``."""
    rng = random.Random(seed)
    categories = sorted(UNSAFE_SENTENCES)
    for i in range(num_docs):
        paragraphs = []
        for _ in range(rng.randint(1, 4)):
            paragraphs.append(" ".join(_sentence(rng) for _ in range(rng.randint(2, 9))))
        if rng.random() < unsafe_share:
            cat = rng.choice(categories)
            p = rng.randrange(len(paragraphs))
            paragraphs[p] = paragraphs[p] + " " + rng.choice(UNSAFE_SENTENCES[cat])
        language = "en"
        if rng.random() < cjk_share:
            paragraphs.append("水循环描述了水在地球上的运动。植物通过光合作用制造养分！" * rng.randint(1, 6))
            language = "zh"
        yield {
            "id": f"demo-{seed}-{i:08d}",
            "text": "\n\n".join(paragraphs),
            "url": f"https://example.org/{seed}/{i}",
            "language": language,
        }


def write_demo_jsonl(path: str, num_docs: int, seed: int = 0, unsafe_share: float = 0.2) -> str:
    """Write ``num_docs`` demo documents to a JSONL file and return its path."""
    with open(path, "w", encoding="utf-8") as f:
        for row in demo_documents(num_docs, seed=seed, unsafe_share=unsafe_share):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
