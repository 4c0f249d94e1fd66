"""Average-linkage (UPGMA) clustering of unit vectors by cosine distance, and its flat cuts.

The same tree as ``scipy.cluster.hierarchy.linkage(x, "average", metric="cosine")`` and the same
cuts as ``fcluster`` (``maxclust`` and ``distance``), checked against them in the tests: importing
``scipy.cluster`` (it pulls in ``scipy.spatial``, ``scipy.special`` and ``scipy.linalg``) took longer
than clustering a file's windows. Built by the nearest-neighbour chain algorithm on a dense distance
matrix, as scipy does: average linkage is reducible, so merging reciprocal nearest neighbours as
they are found gives the greedy tree.
"""

from __future__ import annotations

import numpy as np


class AverageLinkage:
    """The merges of average-linkage clustering of the rows of ``x`` (unit vectors), lowest first."""

    def __init__(self, x: np.ndarray) -> None:
        n = len(x)
        self.n = n
        x = np.asarray(x, dtype=np.float32)
        distance = np.maximum(1.0 - x @ x.T, 0.0).astype(np.float32)
        np.fill_diagonal(distance, np.inf)
        size = np.ones(n)
        merges: list[tuple[float, int, int]] = []
        chain: list[int] = []
        alive = list(range(n))
        for _ in range(n - 1):
            if not chain:
                chain.append(alive[0])
            while True:
                a = chain[-1]
                b = int(np.argmin(distance[a]))
                # The previous link on a tie: the chain then always ends at a reciprocal pair.
                if len(chain) > 1 and distance[a, chain[-2]] <= distance[a, b]:
                    b = chain[-2]
                    break
                chain.append(b)
            chain.pop()
            chain.pop()
            merges.append((float(distance[a, b]), a, b))
            # Lance-Williams for average linkage; the merged cluster keeps slot a, slot b goes away.
            row = (size[a] * distance[a] + size[b] * distance[b]) / (size[a] + size[b])
            distance[a], distance[:, a] = row, row
            distance[a, a] = np.inf
            distance[b], distance[:, b] = np.inf, np.inf
            size[a] += size[b]
            alive.remove(b)
        # Stable by height: merges at one height keep the order they were made in.
        order = sorted(range(len(merges)), key=lambda i: merges[i][0])
        self.heights = np.array([merges[i][0] for i in order])
        self.pairs = [(merges[i][1], merges[i][2]) for i in order]

    def cut(self, k: int) -> np.ndarray:
        """0-based labels of the ``k`` clusters left after all but the top ``k - 1`` merges."""
        return self._labels(self.n - max(1, min(k, self.n)))

    def cut_at(self, distance: float) -> np.ndarray:
        """0-based labels of the clusters merged at heights up to ``distance``."""
        return self._labels(int(np.searchsorted(self.heights, distance, side="right")))

    def _labels(self, merges: int) -> np.ndarray:
        parent = np.arange(self.n)

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in self.pairs[:merges]:
            parent[root(b)] = root(a)
        roots = np.array([root(i) for i in range(self.n)])
        return np.unique(roots, return_inverse=True)[1].astype(np.int64)
