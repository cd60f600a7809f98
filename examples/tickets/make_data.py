"""Write this example's data folder: short customer-support messages, generated here (nothing downloaded).

    python examples/tickets/make_data.py [OUT_DIR] [N]      (default: examples/tickets/data, 2000 messages)

Each message asks about one of four things — billing, delivery, account, bug — in a customer's own
words: a greeting or none, one or two sentences drawn from the intent's phrasings with its products,
amounts and dates filled in, sometimes a word from another intent ("my invoice says it shipped"),
a sign-off or none, and a few typos. `data/labels.csv` lists `example_id,label,text`. Seeded: the
same N gives the same messages.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

PRODUCTS = ["headphones", "the blue kettle", "my phone case", "a desk lamp", "the running shoes", "two mugs"]
INTENTS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {product}",
        "why is there a charge of {amount} on my card",
        "can I get a refund for {product}",
        "the invoice for order {order} shows the wrong amount",
        "my payment of {amount} failed but the money left my account",
        "please cancel the subscription before the next billing date",
        "I need a VAT receipt for {amount}",
    ],
    "delivery": [
        "where is my parcel, order {order} was due {day}",
        "{product} has not arrived yet",
        "the courier left {product} at the wrong address",
        "tracking for order {order} has not moved since {day}",
        "can you deliver {product} to my office instead",
        "the box arrived damaged and {product} is broken",
        "how long does shipping to Norway take",
    ],
    "account": [
        "I cannot log in, the password reset email never comes",
        "please change the email address on my account",
        "how do I delete my account and my data",
        "my account was locked after too many attempts",
        "I want to turn on two-factor authentication",
        "someone else signed in to my account on {day}",
        "update my phone number please",
    ],
    "bug": [
        "the app crashes when I open my orders",
        "the checkout button does nothing on my phone",
        "search returns nothing for {product}",
        "the page shows an error 500 since {day}",
        "images do not load in the app after the update",
        "the website freezes when I add {product} to the basket",
        "dark mode makes the prices unreadable",
    ],
}
GREETINGS = ["", "", "hi,", "hello,", "good morning,", "hey team,", "dear support,"]
SIGN_OFFS = ["", "", "thanks", "thank you!", "regards, Sam", "cheers", "please help asap"]
DAYS = ["monday", "tuesday", "last week", "yesterday", "the 3rd", "friday"]
CROSS_WORDS = {"billing": "refund", "delivery": "shipped", "account": "login", "bug": "error"}


def _typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 8 or rng.random() > 0.3:
        return text
    i = int(rng.integers(1, len(text) - 1))
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]  # two letters swapped


def message(intent: str, rng: np.random.Generator) -> str:
    fill = {
        "product": PRODUCTS[int(rng.integers(len(PRODUCTS)))],
        "amount": f"{rng.integers(5, 300)}.{rng.integers(0, 99):02d} EUR",
        "order": f"#{rng.integers(10000, 99999)}",
        "day": DAYS[int(rng.integers(len(DAYS)))],
    }
    phrasings = INTENTS[intent]
    picked = rng.choice(len(phrasings), size=int(rng.integers(1, 3)), replace=False)
    sentences = [phrasings[int(k)].format(**fill) for k in picked]
    if rng.random() < 0.25:  # a word that belongs to another intent, so single words are not enough
        other = [k for k in CROSS_WORDS if k != intent][int(rng.integers(3))]
        sentences.append(f"not about the {CROSS_WORDS[other]}")
    parts = [
        GREETINGS[int(rng.integers(len(GREETINGS)))],
        ". ".join(sentences) + ".",
        SIGN_OFFS[int(rng.integers(len(SIGN_OFFS)))],
    ]
    return _typo(" ".join(p for p in parts if p), rng)


def main(out: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(20261130)
    out.mkdir(parents=True, exist_ok=True)
    intents = list(INTENTS)
    rows = [
        {"example_id": f"tickets-{i:05d}", "label": intents[i % 4], "text": message(intents[i % 4], rng)}
        for i in range(n)
    ]
    path = out / "labels.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["example_id", "label", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    print(main(out, int(sys.argv[2]) if len(sys.argv) > 2 else 2000))
