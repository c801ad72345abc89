"""Numbers written out in words, from the num2words package: a translation task and a language task.

- NumberWords: pairs (number in words in src_lang, the same number in tgt_lang), Vietnamese -> English by
  default ("hai mươi mốt" -> "twenty-one").
- LanguageOfNumberWords: phrases labelled with their language (10 Latin-script languages by default).

Numbers are drawn with their digit count uniform (so 7 and 700,000,000 are equally likely to have their kind
represented), below `max_number`; the training and test numbers are drawn together and then split at random, so
both splits follow the same distribution and no test number appears in training (drawing the test numbers
first would give the test split most of the few one- and two-digit numbers and training none). Everything is
deterministic for a seed. Text is normalised: lowercase, commas dropped ("one million, two hundred" ->
"one million two hundred"), single spaces; hyphens and "and" are kept as num2words writes them.
"""
import numpy as np

from .dataset import Dataset

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "vi", "id", "nl", "pl")


def number_to_words(n, lang="en"):
    """`n` in words in language `lang` (any language num2words supports), normalised."""
    from num2words import num2words

    try:
        text = num2words(int(n), lang=lang)
    except NotImplementedError:
        raise ValueError(f"number_to_words: num2words does not support language {lang!r}") from None
    return " ".join(text.lower().replace(",", " ").split())


def sample_numbers(count, max_number, rng, exclude=frozenset()):
    """`count` distinct integers in [0, max_number), not in `exclude`, with a uniformly drawn digit count."""
    if max_number < 1:
        raise ValueError(f"sample_numbers: max_number must be at least 1, got {max_number}")
    available = max_number - len([x for x in exclude if 0 <= x < max_number])
    if count > available:
        raise ValueError(f"sample_numbers: cannot draw {count} distinct numbers below {max_number} "
                         f"({available} available)")
    digits = len(str(max_number - 1))
    chosen, seen = [], set(exclude)
    while len(chosen) < count:
        d = int(rng.integers(1, digits + 1))
        low, high = (0 if d == 1 else 10 ** (d - 1)), min(10 ** d, max_number)
        if low >= high:
            continue
        n = int(rng.integers(low, high))
        if n not in seen:
            seen.add(n)
            chosen.append(n)
    return chosen


def _split_numbers(split, num_train, num_test, max_number, seed):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    pool = sample_numbers(num_train + num_test, max_number, rng)
    order = rng.permutation(len(pool))
    chosen = order[num_test:] if split == "train" else order[:num_test]
    return [pool[i] for i in chosen]


class NumberWords(Dataset):
    """Translation pairs (source words, target words) for num_train / num_test distinct numbers."""

    def __init__(self, split="train", src_lang="vi", tgt_lang="en", num_train=20000, num_test=2000,
                 max_number=10**9, seed=0):
        self.split, self.src_lang, self.tgt_lang = split, src_lang, tgt_lang
        self.numbers = _split_numbers(split, num_train, num_test, max_number, seed)
        self.pairs = [(number_to_words(n, src_lang), number_to_words(n, tgt_lang)) for n in self.numbers]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]


class LanguageOfNumberWords(Dataset):
    """(phrase, language index) samples: each number of the split written in each of `languages`."""

    def __init__(self, split="train", languages=LANGUAGES, num_train=2000, num_test=500, max_number=10**9, seed=0):
        if len(set(languages)) < 2:
            raise ValueError("LanguageOfNumberWords: give at least two languages")
        self.split, self.classes = split, list(languages)
        self.numbers = _split_numbers(split, num_train, num_test, max_number, seed)
        self.samples = [(number_to_words(n, lang), label) for n in self.numbers for label, lang in enumerate(languages)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]
