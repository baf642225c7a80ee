"""Batching for training: one step's token rows become forward passes with little or no
padding. Rows are length-sorted into micro-batches of at most ``micro_batch_tokens``
padded tokens; a decoder-only student packs several rows end to end into one sequence,
each row attending only to itself (a block-diagonal causal mask), so packing changes
nothing but the speed. The gradient equals that of one big padded batch (tested).
"""

from __future__ import annotations

from typing import Any

from .encode import EncodedRow, segment_mask
from .modes import LABEL, RATIONALE

IGNORE = -100
"""Target id of positions that carry no loss (prompt, padding)."""


def row_length(row: EncodedRow, seq2seq: bool) -> int:
    return max(len(row.prompt), len(row.target)) if seq2seq else len(row.prompt) + len(row.target)


def pack(rows: list[EncodedRow], capacity: int) -> list[list[EncodedRow]]:
    """First-fit decreasing: rows go into sequences of at most ``capacity`` tokens
    (a longer row gets a sequence of its own). No padding inside a sequence."""
    bins: list[list[EncodedRow]] = []
    fill: list[int] = []
    for row in sorted(rows, key=lambda r: -row_length(r, False)):
        size = row_length(row, False)
        for index, used in enumerate(fill):
            if used + size <= capacity:
                bins[index].append(row)
                fill[index] += size
                break
        else:
            bins.append([row])
            fill.append(size)
    return bins


def micro_batches(
    rows: list[EncodedRow], token_budget: int, seq2seq: bool, pack_length: int = 0
) -> list[list[list[EncodedRow]]]:
    """Split one step's rows into forward passes of at most ``token_budget`` padded tokens.

    Each pass is a list of sequences; a sequence holds one row, or (decoder-only with
    ``pack_length``) several rows packed end to end. Sequences are length-sorted, so
    padding stays small; the gradient is the same as one big batch's."""
    sequences = pack(rows, pack_length) if pack_length and not seq2seq else [[r] for r in rows]

    def length(sequence: list[EncodedRow]) -> int:
        return (
            sum(row_length(r, seq2seq) for r in sequence)
            if not seq2seq
            else row_length(sequence[0], True)
        )

    groups: list[list[list[EncodedRow]]] = []
    current: list[list[EncodedRow]] = []
    for sequence in sorted(sequences, key=length):
        if current and length(sequence) * (len(current) + 1) > token_budget:
            groups.append(current)
            current = []
        current.append(sequence)
    if current:
        groups.append(current)
    return groups


def collate(sequences: list[list[EncodedRow]], pad: int, seq2seq: bool) -> dict[str, Any]:
    """Right-padded tensors. ``labels`` hold target token ids (IGNORE elsewhere) and
    ``kinds`` say, token by token, which loss term (label / rationale) a target feeds.

    Decoder-only sequences may pack several rows: each row restarts its positions and
    attends only to itself (a block-diagonal causal mask), so packing changes nothing
    but the speed."""
    import torch

    if seq2seq:
        rows = [sequence[0] for sequence in sequences]
        width = max(len(r.prompt) for r in rows)
        target_width = max(len(r.target) for r in rows)
        return {
            "input_ids": torch.tensor([r.prompt + [pad] * (width - len(r.prompt)) for r in rows]),
            "attention_mask": torch.tensor(
                [[1] * len(r.prompt) + [0] * (width - len(r.prompt)) for r in rows]
            ),
            "labels": torch.tensor(
                [r.target + [IGNORE] * (target_width - len(r.target)) for r in rows]
            ),
            "kinds": torch.tensor(
                [r.kinds() + [r.kind] * (target_width - len(r.target)) for r in rows]
            ),
            "tokens": sum(len(r.prompt) + len(r.target) for r in rows),
        }
    width = max(sum(len(r.prompt) + len(r.target) for r in sequence) for sequence in sequences)
    ids, positions, segments, labels, kinds = [], [], [], [], []
    for sequence in sequences:
        row_ids, row_positions, row_segments, row_labels, row_kinds = [], [], [], [], []
        for index, r in enumerate(sequence):
            length = len(r.prompt) + len(r.target)
            row_ids += r.prompt + r.target
            row_positions += list(range(length))
            row_segments += [index] * length
            row_labels += [IGNORE] * len(r.prompt) + r.target
            row_kinds += [r.kind] * len(r.prompt) + r.kinds()
        padding = width - len(row_ids)
        ids.append(row_ids + [pad] * padding)
        positions.append(row_positions + list(range(padding)))
        segments.append(row_segments + [-1] * padding)  # padding attends only to padding
        labels.append(row_labels + [IGNORE] * padding)
        kinds.append(row_kinds + [LABEL] * padding)
    segment = torch.tensor(segments)
    batch: dict[str, Any] = {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "kinds": torch.tensor(kinds),
        "tokens": sum(len(r.prompt) + len(r.target) for sequence in sequences for r in sequence),
    }
    if all(len(sequence) == 1 for sequence in sequences):
        batch["attention_mask"] = (segment >= 0).long()  # plain padding mask
    else:
        batch["attention_mask"] = segment_mask(segment)
        batch["position_ids"] = torch.tensor(positions)
    return batch


def target_tokens(groups: list[dict[str, Any]]) -> tuple[int, int]:
    """How many label and rationale target tokens the micro-batches hold."""
    label = sum(int(((g["labels"] != IGNORE) & (g["kinds"] == LABEL)).sum()) for g in groups)
    rationale = sum(
        int(((g["labels"] != IGNORE) & (g["kinds"] == RATIONALE)).sum()) for g in groups
    )
    return label, rationale
