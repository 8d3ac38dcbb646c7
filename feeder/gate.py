"""Which tokens this feeder writes right now, with which fence; the rest are held. Pure.

The outbox asks the gate about every event: a token of a partition this feeder leads (and has
finished taking over) goes to the batch, with the partition's fence of that moment — a batch
written after the lease is lost still carries it, and the Lua step refuses it once a successor
has written; any other token's event is held in the standby buffer, ready for a takeover.
Statuses of tokens it does not write are dropped: they describe this feeder's own sockets,
and only the writer's count.
"""

from __future__ import annotations

from polybus.feeder.takeover import StandbyBuffer
from polybus.wire.events import Event, Status
from polybus.wire.partitions import partition_of


__all__ = ["Gate"]


class Gate:
    """Partitions open for writing (partition -> fence) and the buffer for the others."""

    def __init__(self, partitions: int, buffer: StandbyBuffer | None = None) -> None:
        self.partitions = partitions
        self.buffer = buffer or StandbyBuffer()
        self.open: dict[int, int] = {}
        """partition -> fence, for partitions this feeder writes now."""
        self.taking: dict[int, int] = {}
        """partition -> fence, while its takeover's own writes are made (events still held)."""
        self._of: dict[str, int] = {}

    def partition(self, token: str) -> int:
        """The token's partition (cached: this runs per event)."""
        p = self._of.get(token)
        if p is None:
            p = self._of[token] = partition_of(token, self.partitions)
        return p

    def fence(self, token: str) -> int | None:
        """The fence to write `token` with, or None when this feeder does not write it."""
        p = self.partition(token)
        return self.open.get(p, self.taking.get(p))

    def admit(self, event: Event, epoch: int, rx: int) -> int | None:
        """The fence to publish the event under; None when it is held (or, a status,
        dropped) because this feeder does not write its partition now."""
        fence = self.open.get(self.partition(event.asset_id))
        if fence is None and not isinstance(event, Status):
            self.buffer.hold(event, epoch, rx)
        return fence

    def close(self, partition: int) -> None:
        """Stop writing a partition (lost, released or fenced out): hold its events again."""
        self.open.pop(partition, None)

    def tokens_of(self, partition: int, tokens: list[str]) -> list[str]:
        """The given tokens that belong to `partition`."""
        return [t for t in tokens if self.partition(t) == partition]
