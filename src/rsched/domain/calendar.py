"""Calendar helpers: local days to UTC instants, blocks of the academic year, periods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from rsched.domain.errors import FieldError, InvalidInput


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Period:
    """An averaging period: inclusive local dates."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]


@cache
def _known_zones() -> frozenset[str]:
    """The zone names of the system's tz database (read once: the scan walks a directory
    tree of ~600 files and was taken again for every slot of an import)."""
    return frozenset(available_timezones())


def zone(name: str, path: str = "program.timezone") -> ZoneInfo:
    """The IANA zone ``name``; an unknown name is an input error naming ``path``."""
    try:
        if name in _known_zones() or "/" in name or name == "UTC":
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    raise InvalidInput(FieldError(path, f"unknown time zone {name!r} (use an IANA name)"))


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The instant (UTC) at which local ``day`` begins, DST-correct."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The instant of local wall-clock ``clock`` on ``day``.

    In a spring-forward gap the wall time does not exist; it is read with the offset
    before the change (as zoneinfo does for fold=0), so a 02:30 start becomes 03:30.
    The result is normalised to UTC.
    """
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def blocks_of_year(year_start: date, block_days: int) -> list[Period]:
    """The blocks of the academic year starting ``year_start``: whole blocks of
    ``block_days``; the last block absorbs the day or two left before the next year."""
    next_year = year_start.replace(year=year_start.year + 1)
    total = (next_year - year_start).days
    count = max(1, total // block_days)
    blocks = []
    for n in range(count):
        start = year_start + timedelta(days=n * block_days)
        end = start + timedelta(days=block_days - 1)
        if n == count - 1:
            end = next_year - timedelta(days=1)
        blocks.append(Period(start=start, end=end))
    return blocks


def default_periods(
    horizon_start: date, horizon_end: date, year_start: date, block_days: int
) -> list[Period]:
    """Averaging periods: the blocks of every academic year touching the horizon, clipped to it."""
    first_year = year_start
    while first_year > horizon_start:
        first_year = first_year.replace(year=first_year.year - 1)
    while first_year.replace(year=first_year.year + 1) <= horizon_start:
        first_year = first_year.replace(year=first_year.year + 1)
    periods: list[Period] = []
    ys = first_year
    while ys <= horizon_end:
        for block in blocks_of_year(ys, block_days):
            if block.end < horizon_start or block.start > horizon_end:
                continue
            periods.append(
                Period(start=max(block.start, horizon_start), end=min(block.end, horizon_end))
            )
        ys = ys.replace(year=ys.year + 1)
    return periods
