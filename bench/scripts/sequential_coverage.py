"""How often the sequential core's intervals miss the whole prompt set's figure at any
look, against an ordinary 95 % interval recomputed at the same looks (simulated).

Each trial draws a population of per-prompt figures, shuffles it (the stages' order),
and looks after 6 prompts and then every 3, as an adaptive sweep does. A trial misses
when any look's interval excludes the figure of the whole set.

    python -m bench.scripts.sequential_coverage [--trials 1000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.analysis.sequential import confidence_sequence

KINDS = ("normal", "t3", "speed", "wer", "wer-skewed")


def population(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt (num, den): a mean (den 1) or a word-error difference over words."""
    if kind == "normal":
        return rng.normal(0.1, 1.0, n), np.ones(n)
    if kind == "t3":
        return rng.standard_t(3, n), np.ones(n)
    if kind == "speed":  # log RTF ratios of two cells: 3 % noise on a 0.8x speed-up
        return np.log(0.8) + rng.normal(0.0, 0.03 * np.sqrt(2), n), np.ones(n)
    words = rng.integers(2, 158, n)
    p = np.clip(0.03 * rng.lognormal(0.0, 0.8 if kind == "wer" else 1.2, n), 0.0, 0.9)
    a = rng.binomial(words, p)
    b = rng.binomial(words, np.clip(1.3 * p, 0.0, 0.95))
    return (b - a).astype(float), words.astype(float)


def miss_rates(kind: str, n: int, trials: int, rng: np.random.Generator
               ) -> tuple[float, float]:
    ts = list(range(6, n + 1, 3))
    missed = naive = 0
    for _ in range(trials):
        values, den = population(kind, n, rng)
        truth = values.sum() / den.sum()
        order = rng.permutation(n)
        num = np.full((n, len(ts)), np.nan)
        weights = np.full((n, len(ts)), np.nan)
        for j, t in enumerate(ts):
            num[:t, j], weights[:t, j] = values[order][:t], den[order][:t]
        seq = confidence_sequence(num, weights, n)
        missed += bool(((seq.low > truth + 1e-12) | (seq.high < truth - 1e-12)).any())
        t_seen = seq.n.astype(float)
        half = (1.96 * seq.sd / (seq.den_mean * np.sqrt(t_seen))
                * np.sqrt(np.clip(1.0 - t_seen / n, 0.0, 1.0)))
        naive += bool((np.abs(seq.estimate - truth) > half + 1e-12)[t_seen < n].any())
    return missed / trials, naive / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'figure':<11} {'prompts':>7} {'sequence misses':>16} {'fixed 95 % misses':>18}")
    for kind in KINDS:
        for n in (40, 120):
            seq, naive = miss_rates(kind, n, args.trials, rng)
            print(f"{kind:<11} {n:>7} {seq:>16.1%} {naive:>18.1%}")


if __name__ == "__main__":
    main()
