"""De-duplication on hashes (``api/dedup.py``): the hashes, and the exactness of :class:`SeenKeys`.

The hashes are checked against a plain-Python statement of their definition; :class:`SeenKeys`
against a Python set, with hashes forced to collide so that only the exact comparison can tell
identities apart.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Hashable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from airflow_provider_activities.records import dedup
from airflow_provider_activities.records.dedup import (
    ArrowKeys,
    ListKeys,
    SeenKeys,
    batch_hashes,
    integer_hashes,
    python_hashes,
    string_hashes,
)
from airflow_provider_activities.records.filters import (
    ACTIVITY_BATCH_KEY,
    PARTICIPANT_BATCH_KEY,
    activity_keys,
    participant_key,
)
from airflow_provider_activities.records.schemas import PARTICIPANT_SCHEMA

MASK = (1 << 64) - 1


def _mix(value: int) -> int:
    value ^= value >> 30
    value = (value * 0xBF58476D1CE4E5B9) & MASK
    value ^= value >> 27
    value = (value * 0x94D049BB133111EB) & MASK
    return value ^ (value >> 31)


def reference_string_hash(value: str | bytes | None) -> int:
    """The definition: mix(sum(byte[k] * P**k) xor length * F), in plain Python integers."""
    if value is None:
        return int(dedup._NULL_HASH)
    data = value.encode() if isinstance(value, str) else value
    total = sum(byte * pow(dedup._P, k, 1 << 64) for k, byte in enumerate(data)) & MASK
    return _mix(total ^ ((len(data) * int(dedup._LENGTH_FACTOR)) & MASK))


class TestStringHashes:
    def test_match_the_definition(self) -> None:
        values = ["", "a", "ab", "ba", "\x00", "\x00\x00", "é", "日本語", "f74355d1-99ec-4073-a894-5e8ca9af240f", None]
        assert string_hashes(pa.array(values)).tolist() == [reference_string_hash(v) for v in values]

    def test_depend_on_the_value_only(self) -> None:
        """Whatever the position, the slice, the offset width or the neighbours."""
        rng = random.Random(3)
        values = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(500)]
        values += ["x" * rng.randint(0, 80) for _ in range(200)]
        rng.shuffle(values)
        expected = {value: reference_string_hash(value) for value in set(values)}
        array = pa.array(values)
        for candidate in (array, array.slice(123), array.slice(7, 300), pa.array(values, pa.large_string()), pa.array(values, pa.binary())):
            assert string_hashes(candidate).tolist() == [expected[v if isinstance(v, str) else v.decode()] for v in candidate.to_pylist()]

    def test_strings_spanning_pieces_and_longer_than_a_piece(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows are hashed in pieces of ``_SPAN`` bytes; a row longer than that alone."""
        rng = random.Random(5)
        values = ["".join(rng.choice("abcdef") for _ in range(rng.randint(0, 40))) for _ in range(300)]
        values[10] = "L" * 3_000  # longer than the span below
        values[200] = "M" * 1_500
        monkeypatch.setattr(dedup, "_SPAN", 1_000)
        monkeypatch.setattr(dedup, "_POWERS", dedup._POWERS[:1_001])
        monkeypatch.setattr(dedup, "_INVERSE_POWERS", dedup._INVERSE_POWERS[:1_001])
        assert string_hashes(pa.array(values)).tolist() == [reference_string_hash(v) for v in values]

    def test_nulls_whatever_bytes_their_slots_hold(self) -> None:
        """A null slot may cover bytes (Arrow allows it): the null hash still applies."""
        valid = pa.array(["abc", "def"])
        null_with_bytes = pa.Array.from_buffers(pa.string(), 2, [pa.py_buffer(bytes([0b01])), valid.buffers()[1], valid.buffers()[2]])
        assert null_with_bytes.to_pylist() == ["abc", None]
        assert string_hashes(null_with_bytes).tolist() == [reference_string_hash("abc"), reference_string_hash(None)]

    def test_empty(self) -> None:
        assert string_hashes(pa.array([], pa.string())).tolist() == []
        assert string_hashes(pa.array(["", ""])).tolist() == [reference_string_hash("")] * 2

    def test_refuse_other_types(self) -> None:
        with pytest.raises(TypeError, match="string or binary"):
            string_hashes(pa.array([1.5]))


class TestBatchHashes:
    def test_integers(self) -> None:
        hashes = integer_hashes(pa.array([1, 2, None, 1, -1])).tolist()
        assert hashes[0] == hashes[3] and len({hashes[0], hashes[1], hashes[4]}) == 3
        assert hashes[2] == int(dedup._NULL_HASH)

    def test_participant_identity_ignores_the_email_when_there_is_an_id(self) -> None:
        rows = [
            {"activity_uid": "a", "id": 1, "email": "x@example.com"},
            {"activity_uid": "a", "id": 1, "email": "y@example.com"},  # same identity as the first
            {"activity_uid": "a", "id": None, "email": "x@example.com"},
            {"activity_uid": "a", "id": None, "email": "y@example.com"},
            {"activity_uid": "b", "id": 1, "email": "x@example.com"},
        ]
        batch = pa.RecordBatch.from_pylist(rows, schema=PARTICIPANT_SCHEMA)
        columns = PARTICIPANT_BATCH_KEY.columns(batch)
        hashes = batch_hashes(columns.columns).tolist()
        assert PARTICIPANT_BATCH_KEY.identities(columns) == [participant_key(row) for row in rows]
        assert hashes[0] == hashes[1] and len(set(hashes)) == 4

    def test_order_of_the_parts_matters(self) -> None:
        a, b = pa.array(["p"]), pa.array(["q"])
        assert batch_hashes([a, b]).tolist() != batch_hashes([b, a]).tolist()


def _arrow_keys(values: list[Any]) -> ArrowKeys:
    return ArrowKeys(pa.RecordBatch.from_pydict({"uid": pa.array(values, pa.string())}), activity_keys)


def _first_unseen(values: list[Any], reference: set[Any]) -> list[int]:
    """What a set says: the positions of the values not in ``reference`` (nor earlier); adds them."""
    positions = []
    for index, value in enumerate(values):
        if value not in reference:
            reference.add(value)
            positions.append(index)
    return positions


class TestSeenKeys:
    @pytest.mark.parametrize("block_size", [1, 4, 65_536])
    @pytest.mark.parametrize("kind", ["arrow", "python"])
    def test_agrees_with_a_set_when_every_hash_collides(self, kind: str, block_size: int) -> None:
        """All hashes equal: every decision is the exact comparison's, across spilled blocks."""
        rng = random.Random(f"{kind}-{block_size}")
        seen, reference = SeenKeys(block_size=block_size), set()
        for _ in range(30):
            values = [f"{rng.choice('abcdef')}{rng.randint(0, 5)}" if rng.random() < 0.9 else None for _ in range(rng.randint(0, 8))]
            keys = _arrow_keys(values) if kind == "arrow" else ListKeys(list(values))
            new = seen.new(np.zeros(len(values), dtype=np.uint64), keys, kind).tolist()
            assert new == _first_unseen(values, reference)
        assert len(seen) == len(reference)

    @pytest.mark.parametrize("block_size", [3, 65_536])
    def test_agrees_with_a_set_on_real_hashes(self, block_size: int) -> None:
        rng = random.Random(block_size)
        pool = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2_000)] + [None]
        seen, reference = SeenKeys(block_size=block_size), set()
        for _ in range(60):
            values = [rng.choice(pool) for _ in range(rng.randint(0, 200))]
            keys = _arrow_keys(values)
            new = seen.new(batch_hashes(ACTIVITY_BATCH_KEY.columns(keys.batch).columns), keys, "arrow").tolist()
            assert new == _first_unseen(values, reference)
        assert len(seen._runs) < 12  # merged runs: about log2 of the calls
        assert len(seen) == len(reference)

    def test_python_hash_collisions(self) -> None:
        """CPython: hash(-1) == hash(-2); both identities are kept, each once."""
        seen = SeenKeys(block_size=2)
        identities: list[Hashable] = [-1, 5, -2, -1, 7, -2]
        assert seen.new(python_hashes(identities), ListKeys(identities), "python").tolist() == [0, 1, 2, 4]
        assert seen.new(python_hashes([-2, -1, 8]), ListKeys([-2, -1, 8]), "python").tolist() == [2]

    def test_refuses_to_mix_kinds(self) -> None:
        seen = SeenKeys()
        seen.new(np.zeros(1, dtype=np.uint64), ListKeys(["a"]), "python")
        with pytest.raises(ValueError, match="python hashes"):
            seen.new(np.zeros(1, dtype=np.uint64), _arrow_keys(["a"]), "arrow")

    def test_memory_holds_hashes_and_ids_not_identities(self) -> None:
        """Spilled blocks are on disk; in memory: 12 bytes per identity plus the unspilled block."""
        seen = SeenKeys(block_size=1_000)
        for start in range(0, 20_000, 500):
            values = [f"identity-{n:08d}" for n in range(start, start + 500)]
            keys = _arrow_keys(values)
            seen.new(batch_hashes(ACTIVITY_BATCH_KEY.columns(keys.batch).columns), keys, "arrow")
        assert len(seen) == 20_000 and len(seen._blocks) == 20
        assert sum(run.hashes.nbytes + run.ids.nbytes for run in seen._runs) == 12 * 20_000
        assert sum(len(table) for table in seen._pending) < 1_000
        seen.close()
