"""Does the observed split of `x-model-version` match the configured weights? Pure.

Each response is a Bernoulli trial per version (p = weight/100), so the count of version v in n
responses is Binomial(n, p): it passes when within `z` standard deviations of n*p (z = 4 keeps
false alarms below 1 in 10,000 per version). A version with weight 0 must not answer at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from loadtests.gate import Verdict


def split_verdicts(counts: Mapping[str, int], weights: Mapping[int, int], z: float = 4.0) -> list[Verdict]:
    n = sum(counts.values())
    verdicts = []
    for version, weight in sorted(weights.items()):
        observed = counts.get(str(version), 0)
        p = weight / 100
        expected = n * p
        tolerance = z * math.sqrt(n * p * (1 - p))
        passed = observed == 0 if weight == 0 else (n > 0 and abs(observed - expected) <= tolerance)
        share = observed / n if n else 0.0
        verdicts.append(
            Verdict(
                f"split v{version}",
                f"{weight}% (±{tolerance / n:.1%} at n={n})" if n and 0 < weight < 100 else f"{weight}%",
                f"{share:.1%} ({observed}/{n})",
                passed,
            )
        )
    unknown = sorted(set(counts) - {str(v) for v in weights})
    for version in unknown:
        verdicts.append(Verdict(f"split v{version}", "not configured", f"{counts[version]}/{n}", False))
    return verdicts
