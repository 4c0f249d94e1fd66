"""Text for a bank's customer calls: account and card numbers, amounts, dates, IBANs, products and fees.

Each utterance has a *written* form (the label, the way a transcript should read: ``$1,250.75``,
``GB29 NWBK 6016 1331 9268 19``) and a *spoken* form (what the caller says and the TTS voice reads:
"one thousand two hundred and fifty dollars and seventy five cents", digits one by one). Base Whisper
is weak exactly there: digits read one by one, bank jargon (ISA, CHAPS, BIC), invented product names.

:func:`make_splits` returns train/eval/test lists with no written sentence in two splits.
:data:`RECIPE_VOICES` says which voices and conditions each split is spoken with: the test split uses
a voice and conditions that training never hears.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whisperops.errors import OptionError

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINALS = {
    1: "first",
    2: "second",
    3: "third",
    4: "fourth",
    5: "fifth",
    6: "sixth",
    7: "seventh",
    8: "eighth",
    9: "ninth",
    10: "tenth",
    11: "eleventh",
    12: "twelfth",
    13: "thirteenth",
    14: "fourteenth",
    15: "fifteenth",
    16: "sixteenth",
    17: "seventeenth",
    18: "eighteenth",
    19: "nineteenth",
    20: "twentieth",
    21: "twenty first",
    22: "twenty second",
    23: "twenty third",
    24: "twenty fourth",
    25: "twenty fifth",
    26: "twenty sixth",
    27: "twenty seventh",
    28: "twenty eighth",
}
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def words(n: int) -> str:
    """English words for ``0 <= n < 1_000_000`` ("one thousand two hundred and fifty")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    tail = "" if not rest else (f" and {words(rest)}" if rest < 100 else f" {words(rest)}")
    return f"{words(thousands)} thousand{tail}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def digits(s: str) -> str:
    """Read a string character by character: digits as words, letters as letters ("G B two nine")."""
    out = []
    for ch in s:
        if ch.isdigit():
            out.append(_ONES[int(ch)])
        elif ch.isalpha():
            out.append(ch.upper())
    return " ".join(out)


@dataclass(frozen=True)
class Utterance:
    written: str
    spoken: str

    def line(self) -> str:
        """The texts-file line: ``written<TAB>spoken`` (``whisperops data synth`` reads both)."""
        return self.written if self.written == self.spoken else f"{self.written}\t{self.spoken}"


class _Slots:
    """Random slot values, each as (written, spoken)."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def amount(self) -> tuple[str, str]:
        r = self.r
        dollars = r.choice([r.randint(2, 99), r.randint(100, 999), r.randint(1000, 25000)])
        cents = r.choice([0, 0, r.randint(1, 99)])
        written = f"${dollars:,}" + (f".{cents:02d}" if cents else "")
        spoken = f"{words(dollars)} dollars" + (f" and {words(cents)} cents" if cents else "")
        return written, spoken

    def small_amount(self) -> tuple[str, str]:
        d = self.r.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45])
        return f"${d}", f"{words(d)} dollars"

    def last4(self) -> tuple[str, str]:
        s = f"{self.r.randint(0, 9999):04d}"
        return s, digits(s)

    def account(self) -> tuple[str, str]:
        s = f"{self.r.randint(10_000_000, 99_999_999)}"
        return s, digits(s)

    def card(self) -> tuple[str, str]:
        groups = [f"{self.r.choice([4, 5])}{self.r.randint(0, 999):03d}"] + [
            f"{self.r.randint(0, 9999):04d}" for _ in range(3)
        ]
        return " ".join(groups), ", ".join(digits(g) for g in groups)

    def sort_code(self) -> tuple[str, str]:
        parts = [self.r.randint(10, 99) for _ in range(3)]
        return "-".join(str(p) for p in parts), " ".join(words(p) for p in parts)

    def iban(self) -> tuple[str, str]:
        r = self.r
        country = r.choice(["GB", "DE", "FR", "IE", "NL", "ES"])
        bank = "".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
        nums = (
            [f"{r.randint(0, 99):02d}"] + [f"{r.randint(0, 9999):04d}" for _ in range(3)] + [f"{r.randint(0, 99):02d}"]
        )
        groups = [country + nums[0], bank, *nums[1:]]
        return " ".join(groups), ", ".join(digits(g) for g in groups)

    def date(self) -> tuple[str, str]:
        month = self.r.choice(_MONTHS)
        day = self.r.randint(1, 28)
        return f"{month} {ordinal(day)}", f"{month} {_ORDINALS[day]}"

    def rate(self) -> tuple[str, str]:
        whole = self.r.randint(1, 29)
        tenth = self.r.randint(0, 9)
        return f"{whole}.{tenth}%", f"{words(whole)} point {_ONES[tenth]} percent"

    def pick(self, options: list[tuple[str, str]] | list[str]) -> tuple[str, str]:
        item = self.r.choice(options)
        return item if isinstance(item, tuple) else (item, item)


# (written, spoken) where the two differ: jargon read out the way callers say it.
PRODUCTS: list[tuple[str, str] | str] = [
    "Platinum Rewards credit card",
    "Everyday Saver account",
    "FlexPlus current account",
    "Premier Reserve account",
    ("Cash ISA", "Cash eye-sa"),
    ("Stocks and Shares ISA", "Stocks and Shares eye-sa"),
    "Fixed Rate Bond",
    "Student Advantage account",
    "Business Select account",
    "Advantage Gold card",
    "Tracker Mortgage",
    "Horizon Travel card",
]
FEES: list[tuple[str, str] | str] = [
    "unarranged overdraft fee",
    "non-sterling transaction fee",
    "cash advance fee",
    "late payment fee",
    "returned payment fee",
    ("CHAPS transfer fee", "chaps transfer fee"),
    "foreign exchange fee",
    "annual card fee",
    "early repayment charge",
    "account maintenance fee",
]
REQUESTS: list[str] = [
    "freeze my debit card",
    "unfreeze my credit card",
    "order a replacement card",
    "dispute a transaction",
    "reset my PIN",
    "raise my credit limit",
    "cancel a direct debit",
    "set up a standing order",
    "report a lost card",
    "close my savings account",
    "activate my new card",
    "change my billing address",
    "block contactless payments",
    "request a chargeback",
    "update my phone number",
]
CODES: list[tuple[str, str] | str] = [
    ("BIC", "B I C"),
    ("SWIFT code", "swift code"),
    ("APR", "A P R"),
    ("AER", "A E R"),
    ("CVV", "C V V"),
    ("IBAN", "eye ban"),
]
PAYMENTS: list[tuple[str, str] | str] = [
    ("BACS", "backs"),
    ("CHAPS", "chaps"),
    ("SWIFT transfer", "swift transfer"),
    "Faster Payments",
    "standing order",
    "wire transfer",
]


def _a(item: tuple[str, str], capital: bool = False) -> list[tuple[str, str] | str]:
    """The right indefinite article before ``item``."""
    article = "an " if item[0][:1].lower() in "aeiou" else "a "
    return [article.capitalize() if capital else article, item]


def _templates() -> list[Callable[[_Slots], list[tuple[str, str] | str]]]:
    """Each template returns pieces: plain strings (same written and spoken) and slot pairs."""
    return [
        lambda s: ["I'd like to ", s.pick(REQUESTS), " ending in ", s.last4(), "."],
        lambda s: ["Can you ", s.pick(REQUESTS), " please? The card ends in ", s.last4(), "."],
        lambda s: ["Please ", s.pick(REQUESTS), " on account number ", s.account(), "."],
        lambda s: ["I was charged ", *_a(s.pick(FEES)), " of ", s.small_amount(), " on ", s.date(), "."],
        lambda s: ["Why is there ", *_a(s.pick(FEES)), " on my ", s.pick(PRODUCTS), "?"],
        lambda s: ["I want to transfer ", s.amount(), " to IBAN ", s.iban(), "."],
        lambda s: ["My account number is ", s.account(), " and the sort code is ", s.sort_code(), "."],
        lambda s: ["The payment of ", s.amount(), " on ", s.date(), " was not made by me."],
        lambda s: ["My card number is ", s.card(), "."],
        lambda s: ["What is the ", s.pick(CODES), " for my ", s.pick(PRODUCTS), "?"],
        lambda s: ["The ", s.pick(PRODUCTS), " pays ", s.rate(), " ", ("AER", "A E R"), "."],
        lambda s: ["Is the ", s.pick(PRODUCTS), " still at ", s.rate(), " ", ("APR", "A P R"), "?"],
        lambda s: ["I need to ", s.pick(REQUESTS), " before ", s.date(), "."],
        lambda s: ["Please send ", s.amount(), " by ", s.pick(PAYMENTS), " to sort code ", s.sort_code(), "."],
        lambda s: [
            *_a(s.pick(FEES), capital=True),
            " of ",
            s.small_amount(),
            " was taken from account ",
            s.account(),
            ".",
        ],
        lambda s: ["I'm calling about my ", s.pick(PRODUCTS), ", I'd like to ", s.pick(REQUESTS), "."],
        lambda s: ["My balance shows ", s.amount(), " but I expected ", s.amount(), "."],
        lambda s: ["Can I open ", *_a(s.pick(PRODUCTS)), " with ", s.amount(), "?"],
        lambda s: ["The IBAN is ", s.iban(), " and the ", s.pick(CODES), " is on the statement."],
        lambda s: ["Please refund the ", s.pick(FEES), " from ", s.date(), "."],
    ]


def utterance(rng: random.Random) -> Utterance:
    slots = _Slots(rng)
    pieces = rng.choice(_templates())(slots)
    written = "".join(p if isinstance(p, str) else p[0] for p in pieces)
    spoken = "".join(p if isinstance(p, str) else p[1] for p in pieces)
    return Utterance(written, spoken)


def generate(n: int, seed: int = 0) -> list[Utterance]:
    """``n`` distinct banking utterances (distinct written forms), reproducible from ``seed``."""
    if n < 1:
        raise OptionError(f"banking texts: asked for {n}; ask for at least 1")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Utterance] = []
    for _ in range(n * 50):
        u = utterance(rng)
        key = u.written.lower()
        if key not in seen:
            seen.add(key)
            out.append(u)
            if len(out) == n:
                return out
    raise OptionError(f"banking texts: could only make {len(out)} distinct sentences of the {n} asked")


def make_splits(train: int, eval: int, test: int, seed: int = 0) -> dict[str, list[Utterance]]:
    """Train/eval/test utterances; a written sentence never appears in two splits."""
    pool = generate(train + eval + test, seed)
    return {"train": pool[:train], "eval": pool[train : train + eval], "test": pool[train + eval :]}


# Which voices and conditions speak each split. Test uses a voice (British RP espeak) and conditions
# (telephone band, 10 dB noise) that training never hears; eval mirrors training (it picks checkpoints).
RECIPE_VOICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (("piper:joe", "espeak:en-us"), ("clean", "speed:0.9", "speed:1.15", "noise:20")),
    "eval": (("piper:joe", "espeak:en-us"), ("clean", "noise:20")),
    "test": (("piper:joe", "espeak:en-gb-x-rp"), ("telephone", "noise:10")),
}


def build(
    output: str | Path,
    train: int = 400,
    eval: int = 40,
    test: int = 80,
    seed: int = 0,
    voices: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
) -> dict[str, Path]:
    """Write ``output/{train,eval,test}/manifest.jsonl`` (+ clips) and ``output/texts/SPLIT.txt``."""
    from whisperops.data.synth import synthesize

    output = Path(output)
    plan = voices or RECIPE_VOICES
    splits = make_splits(train, eval, test, seed)
    out: dict[str, Path] = {}
    for split, utts in splits.items():
        if not utts:
            continue
        lines = [u.line() for u in utts]
        texts = output / "texts" / f"{split}.txt"
        texts.parent.mkdir(parents=True, exist_ok=True)
        texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
        split_voices, split_augs = plan[split]
        synthesize(lines, output / split, split_voices, split_augs, seed=seed, extra={"split": split})
        out[split] = output / split / "manifest.jsonl"
    return out
