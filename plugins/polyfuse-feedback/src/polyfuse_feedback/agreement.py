"""Agreement between annotators beyond chance: Cohen's kappa for two people, Fleiss' kappa for a panel."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of two annotators' answers to the same items; ``None`` when it is undefined.

    Undefined with no items, or when chance agreement is certain (both gave one same answer throughout).
    """
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of ``counts[item][category]``: how many raters put each item in each category.

    Every item must have the same number of raters (at least 2); ``None`` when it is undefined
    (no items, or every answer in one category).
    """
    if not counts:
        return None
    raters = {sum(row) for row in counts}
    if len(raters) != 1 or next(iter(raters)) < 2:
        raise ValueError(f"Fleiss' kappa needs the same number (>= 2) of raters per item, got {sorted(raters)}")
    n, items = next(iter(raters)), len(counts)
    shares = [sum(row[j] for row in counts) / (items * n) for j in range(len(counts[0]))]
    expected = sum(p * p for p in shares)
    if expected == 1.0:
        return None
    observed = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts) / items
    return (observed - expected) / (1.0 - expected)
