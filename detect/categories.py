"""The one mapping between a dataset's category ids and the predictor's indices.

``num_classes`` everywhere in detect means foreground classes. The predictor has
``num_classes + 1`` outputs: index 0 is background and index ``k`` (1..K) is the
k-th category id in ascending order. Everything outside the model speaks the
dataset's own category ids (COCO: 1..90 with gaps; VOC: 1..20).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CategoryMap:
    ids: tuple[int, ...]  # ascending dataset category ids
    names: tuple[str, ...]

    @staticmethod
    def from_dict(classes: dict[int, str]) -> "CategoryMap":
        if not classes:
            raise ValueError("a detector needs at least one category")
        ids = tuple(sorted(int(i) for i in classes))
        return CategoryMap(ids=ids, names=tuple(str(classes[i]) for i in ids))

    def to_dict(self) -> dict[int, str]:
        return dict(zip(self.ids, self.names))

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    def name(self, category_id: int) -> str:
        return self.names[self.ids.index(category_id)]

    def to_index(self, category_ids: Tensor) -> Tensor:
        """Dataset ids -> predictor indices 1..K; raises on an id the map lacks."""
        table = torch.tensor(self.ids, device=category_ids.device)
        index = torch.searchsorted(table, category_ids)
        index_clamped = index.clamp(max=len(self.ids) - 1)
        unknown = table[index_clamped] != category_ids
        if unknown.any():
            bad = category_ids[unknown].unique().tolist()
            raise ValueError(f"labels {bad} are not among the model's category ids {list(self.ids)}")
        return index_clamped + 1

    def to_id(self, indices: Tensor) -> Tensor:
        """Predictor indices 1..K -> dataset ids."""
        table = torch.tensor((0,) + self.ids, device=indices.device, dtype=torch.int64)
        return table[indices]

    def same_names(self, source: "CategoryMap") -> dict[int, int]:
        """``{predictor index here: predictor index in source}`` for background (0: 0) and
        every class whose name ``source`` also has; ids may differ, names decide."""
        source_index = {}
        for index, name in enumerate(source.names, start=1):
            source_index.setdefault(name, index)  # the first of repeated names
        pairs = {0: 0}
        for index, name in enumerate(self.names, start=1):
            if name in source_index:
                pairs[index] = source_index[name]
        return pairs
