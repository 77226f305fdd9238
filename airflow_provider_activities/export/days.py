"""Writing an export run's days from its spool into day partitions, in lanes.

The export's rows come back from :class:`~airflow_provider_activities.export.spool.RawExportBuffer`
day by day; encoding Parquet is most of that work, and Arrow does it with the GIL released. So
days are written in lanes, each a thread with a
:class:`~airflow_provider_activities.storage.writer.PartitionedParquetWriter` of its own: one
day's encoding overlaps another's.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from airflow_provider_activities._threads import usable_cpus
from airflow_provider_activities.export.spool import RawExportBuffer
from airflow_provider_activities.storage.writer import FileInfo, PartitionedParquetWriter

MAX_WRITE_LANES = 4
"""Days written at once at most (one per CPU): each lane reads its days back from the spool and
encodes their Parquet, so one day's encoding overlaps another's."""


def write_lanes(days: int) -> int:
    """The lanes to write a run of ``days`` days with: one per CPU, at most :data:`MAX_WRITE_LANES`
    and one per day.
    """
    return max(1, min(usable_cpus(), MAX_WRITE_LANES, days))


def write_days(
    buffer: RawExportBuffer, writers: list[PartitionedParquetWriter], days: list[date], date_key: str
) -> dict[str, list[FileInfo]]:
    """Write every day of the run from ``buffer`` into its partition ``{date_key}=YYYY-MM-DD``, a
    day without rows as a zero-row file; return the files of every partition.

    Each writer is a lane of its own, run by a thread: lane ``k`` writes days ``k``,
    ``k + lanes``, ... of ``days``, gathering each day's rows from the spool and encoding them in
    turn (a single lane gathers the next batch while it encodes one), and closes each day's file
    as soon as the day is complete. A partition's bytes depend only on its own rows, so they are
    the same whatever the number of lanes. The first lane to fail stops the others at their next
    batch, and its error is raised.
    """
    failed = threading.Event()

    def lane(number: int) -> dict[str, list[FileInfo]]:
        writer, own = writers[number], days[number :: len(writers)]
        try:
            with contextlib.closing(buffer.rows_by_day(only=set(own), ahead=len(writers) == 1)) as rows:
                current = None
                for day, batch in rows:
                    if failed.is_set():
                        return {}
                    if current is not None and day != current:  # a day's rows come together: the day before is complete
                        writer.finish_partition(f"{date_key}={current.isoformat()}")
                    current = day
                    writer.write(f"{date_key}={day.isoformat()}", batch)
            for day in own:
                writer.ensure_partition(f"{date_key}={day.isoformat()}")
            return writer.close()
        except BaseException:
            failed.set()
            raise

    if len(writers) == 1:
        parts = [lane(0)]
    else:
        with ThreadPoolExecutor(max_workers=len(writers), thread_name_prefix="peopleai-export-lane") as pool:
            parts = list(pool.map(lane, range(len(writers))))
    files = {name: infos for part in parts for name, infos in part.items()}
    return dict(sorted(files.items()))


__all__ = ["MAX_WRITE_LANES", "write_days", "write_lanes"]
