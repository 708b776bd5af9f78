"""``StreamProducer``: runs one ``executeStream`` call's model in bursts.

A burst runs on a call thread and takes items from the model while the
window (``ItemStream``) has room. When an item is ready and the window is
full, the item is kept and the call is *parked* (``CallRunner.park``): the
generator stays suspended at its ``yield``, no thread waits for the reader
(the model runs ahead of it by the window and that one item, as it did when
its thread waited in ``yield``), and a ``threadsafe = False``
model's lock is free for its other calls. The ``itemAck`` that opens the
window again queues the next burst, which may run on another call thread
and goes on for as long as the window has room (a reader that keeps up
never parks the call). So slow readers hold no call threads: the threads
of a worker are for producing items, never for waiting on readers.

An async generator (``async def execute`` with ``yield``) gets an event
loop of its own, created for the stream and closed at its end. A burst
runs that loop on its call thread (``run_until_complete`` of a coroutine
that pulls items while the window has room); a parked stream's loop is not
running, so its background tasks (if it started any) wait too, as they did
while its thread waited in ``yield`` before. The loop moves between call
threads; it is never run by two at once (one burst at a time).

The end of a stream (its last item, an error, a cancel) closes the
generator on the thread that saw it (``close()``: ``GeneratorExit`` at its
``yield``, or ``aclose()`` and the cancellation of the loop's tasks for an
async generator), holding the model's lock, then the reply is sent. A
cancel of a parked stream queues a burst that does only that.

Example::

    producer = StreamProducer(entry, msg, call, server.item_streams)
    result = producer.run(call)   # PARK, or {"items": n} at the end
"""

import asyncio
import inspect

from . import model_lock
from .errors import CancelledError
from .execution import PARK, CallRunner, end_loop
from .item_stream import ItemStream

__all__ = ["StreamProducer"]

_unshield = CallRunner.unshield


def _noop():
    pass


# ``StreamProducer._pending`` when no item waits for room.
_NONE = object()


class StreamProducer:
    """The model side of one ``executeStream`` call; ``run`` is every burst's handler."""

    def __init__(self, entry, msg, call, streams, start_event=None):
        self._entry = entry
        self._msg = msg
        # The ``streamStart`` event, sent as the model starts (first burst).
        self._start_event = start_event
        self.stream = ItemStream(call)
        # server.item_streams, where itemAck finds the stream while it runs.
        self._streams = streams
        self._key = (call.connection, call.id)
        streams[self._key] = self.stream
        self._closed = False
        # The call's safety net: a cancel's interrupt that fires before a
        # burst's clean-up could start still closes the generator.
        call.on_end = self.end
        self._started = False
        # An item the model gave that waits for room in the window.
        self._pending = _NONE
        self._items = None  # a sync iterator
        self._agen = None  # or an async generator...
        self._loop = None  # ...and its event loop

    def run(self, call):
        """One burst (a call thread): ``{"items": n}`` once the model is done,
        ``PARK`` when the window is full; the model's exception (after the
        generator is closed) when it fails, ``CancelledError`` when the call
        was cancelled while parked."""
        lock = self._entry.lock
        if lock is None:
            return self._burst(call)
        if self._started and call.is_cancelled():
            # Resumed to end it (its cancel, its connection gone): its
            # generator is closed holding the lock, and a call that is
            # cancelled already cannot leave a wait. A busy model's lock
            # is waited for with the call held, no thread blocked (each was
            # a stuck thread until the model was free).
            if not lock.acquire(False):
                return self._close_when_free(call, lock)
            shielded = None
        else:
            # The model runs one burst at a time; parked, it is free. A cancel
            # ends a wait for a busy model.
            try:
                shielded = model_lock.take(lock)
            except KeyboardInterrupt:
                if not self._started:
                    raise  # no generator yet: nothing to close
                # Cancelled in the wait: the close waits as above (on_end's
                # close blocked this thread until the model was free).
                return self._close_when_free(call, lock)
        try:
            if shielded is not None:
                _unshield(shielded)
            return self._burst(call)
        finally:
            try:
                lock.release()
            except KeyboardInterrupt:  # fired as release was entered: it did nothing
                lock.release_if_owned()
                raise

    def _close_when_free(self, call, lock):
        """Holds the cancelled ``call`` (``CallRunner.hold``) until ``lock``
        is handed to it; then ``_close_held`` ends it on a call thread."""
        runner = call.connection.runner
        loop = call.server.loop
        CallRunner.hold(call)

        def granted():
            try:
                loop.call_soon_threadsafe(runner.resume, call, self._close_held)
            except RuntimeError:  # the loop closed: the server is exiting
                pass

        lock.queue(granted)
        return PARK

    def _close_held(self, call):
        # The lock is this call's (queued by _close_when_free): close the
        # generator, then the call ends as cancelled.
        lock = self._entry.lock
        lock.claim()
        try:
            return self._burst(call)
        finally:
            try:
                lock.release()
            except KeyboardInterrupt:  # fired as release was entered: it did nothing
                lock.release_if_owned()
                raise

    def _burst(self, call):
        try:
            if call.is_cancelled():  # cancelled (or its client left) while parked
                raise CancelledError("Cannot complete %s: cancelled" % call.cmd)
            if not self._started:
                self._started = True
                if self._start_event is not None:
                    call.send_event(self._start_event)
                items = self._entry.open_stream(self._msg)
                if inspect.isasyncgen(items):
                    self._agen = items
                    self._loop = asyncio.new_event_loop()
                else:
                    self._items = items
            stream = self.stream
            while True:
                full = self._pull(stream) if self._agen is None else self._pull_async(call, stream)
                if not full:
                    break
                if stream.park(self.run):
                    return PARK
        except BaseException:
            self._close()
            raise
        self._close()
        return {"items": self.stream.count}

    def _pull(self, stream):
        """Sends items while the window has room: True when an item waits
        for room (``_pending``), False after the last item."""
        items = self._items
        send = stream.send
        has_room = stream.has_room
        item = self._pending
        self._pending = _NONE
        while True:
            if item is _NONE:
                try:
                    item = next(items)
                except StopIteration:
                    return False
            if not has_room():
                self._pending = item
                return True
            send(item)
            item = _NONE

    def _pull_async(self, call, stream):
        loop = self._loop
        task = loop.create_task(self._pull_agen(stream))
        # A cancel's interrupt fires at the thread's next bytecode; a loop
        # waiting for I/O or a timer runs none until it is woken.
        call.wake = lambda: loop.call_soon_threadsafe(_noop)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if task.done() and not task.cancelled():
                task.exception()  # raised here: not "never retrieved" at collection
            raise
        finally:
            call.wake = None

    async def _pull_agen(self, stream):
        agen = self._agen
        send = stream.send
        has_room = stream.has_room
        item = self._pending
        self._pending = _NONE
        while True:
            if item is _NONE:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return False
            if not has_room():
                self._pending = item
                return True
            send(item)
            item = _NONE

    def end(self):
        """Closes the stream if a burst could not (``Call.on_end``), holding
        the model's lock."""
        if self._closed:
            return
        lock = self._entry.lock
        if lock is None or not self._started:
            # Never opened (cancelled while it waited for its turn): no model
            # code runs in the close, and the lock may be a long stream's.
            self._close()
            return
        with lock:
            self._close()

    def _close(self):
        """The stream is over: close the generator (its finally blocks run
        now, not at collection) and forget the stream."""
        if self._closed:
            return
        self._closed = True
        self._streams.pop(self._key, None)
        self._pending = _NONE
        items = self._items
        self._items = None
        if items is not None:
            close = getattr(items, "close", None)
            if callable(close):
                close()
        if self._loop is not None:
            self._close_async()

    def _close_async(self):
        # asyncio.run's ending, on the stream's loop: a task still running
        # (the burst's, when a cancel interrupted its await) is cancelled
        # (asyncio.CancelledError at the generator's await), then the
        # generator is closed (GeneratorExit at its yield, if it is there).
        loop = self._loop
        agen = self._agen
        self._loop = self._agen = None
        end_loop(loop, agen)
