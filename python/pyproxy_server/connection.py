"""``Connection``: the asyncio ``BufferedProtocol`` of one client connection.

Read loop: the transport reads into the server's shared receive buffer
(``get_buffer``/``buffer_updated``, no allocation per read) and
``data_received`` feeds the ``Framer`` and handles every frame it
completes in one pass. Loop handlers (``threaded=False``) answer inline;
threaded calls parsed from one read go to the ``CallRunner`` as one batch
(``execution.py``). Replies produced while handling one read are written
with one ``transport.write`` per ``FLUSH_EVERY`` requests (and one at the
end), so the client works on the first replies while the rest are made;
replies from executor threads are queued and flushed with one
``call_soon_threadsafe`` per batch of ready replies. After a read from a
fast client the socket is polled for the next request for up to ``--spin-us``
before the loop waits again (``_spin_read``). A read of one whole frame
holding one request whose command runs inline (a sequential client's
``executeModel``) takes a shorter lane with the same results (``_run_lone``).

Public surface used by handlers and extensions: ``connection.id``,
``connection.server``, ``connection.send_event(event)`` (thread-safe),
``connection.on_close(callback)`` (``callback(connection)`` runs on the loop
thread when the connection ends), ``connection.request(cmd, args, timeout)``
(Python → host, from executor threads only; see ``pyproxy.host``).
"""

import asyncio
import concurrent.futures
import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import select
import sys
import threading
import time

from . import big_json, binary, capture, http_meta, long_int, shallow_json
from .call import Call, current_call
from .errors import (
    AuthenticationError,
    ChecksumError,
    FrameError,
    HostError,
    InvalidRequestError,
    OverloadedError,
    ProtocolError,
    PyProxyError,
    SerializationError,
    SpillError,
    UnknownCommandError,
    short_repr,
)
from .execution import CallRunner, OutputSink, fail_future, is_user_error, log_user_error, wire_error
from .framer import HEADER, MAGIC, OVERHEAD, VERSION, Framer, md5_digest
from .inline_watch import InlineWatch
from .json_problem import not_json_reason
from .model_metrics import registry as model_metrics
from .models import RunThreaded
from .spill_refusals import refused_message

__all__ = ["Connection", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
# _finish's default: the connection's spill settings when it runs.
_CURRENT_SPILL = object()

log = logging.getLogger("pyproxy_server.connection")

_decode_json = json.JSONDecoder().decode
# Messages as pieces: big strings travel without being escaped or copied.
_encode_pieces = big_json.encode
_encode_reply = big_json.encode_reply


def _reply(rid, result, http):
    """A success reply as a dict: with ``http`` (the model's status and headers) when not None."""
    if http is None:
        return {"id": rid, "ok": True, "result": result}
    return {"id": rid, "ok": True, "http": http, "result": result}
_split_big_strings = big_json.split_big_strings
_has_big = big_json._has_big
_BIG = big_json.BIG
# The largest read the lone-request lane looks at: one frame of a small message.
_LONE_MAX = _BIG + OVERHEAD
_decode_big = big_json.decode
_raw_decode_json = json.JSONDecoder().raw_decode
_pack_header = HEADER.pack
_frame = Framer.encode
_get_ident = threading.get_ident
_clock = time.perf_counter
_set_running_loop = asyncio._set_running_loop
_set_sink = capture._sink.set
_reset_sink = capture._sink.reset
_set_call = current_call.set
_reset_call = current_call.reset
_readv = getattr(os, "readv", None)
_sched_yield = getattr(os, "sched_yield", None) or (lambda: None)


def _base64_pieces(message, key):
    """The encoded pieces of ``message`` with the ``bytes`` values in
    ``message[key]`` as base64 strings named by ``"$bytes"`` (protocol §3,
    "Bytes"); None when it holds none."""
    split = binary.split(message[key], (key,))
    if split is None:
        return None
    skeleton, found = split
    return _encode_pieces(dict(message, **{key: skeleton, "$bytes": [list(at) for at, _ in found]}))


class Connection(asyncio.BufferedProtocol):
    """One client connection; see the module docstring."""

    # Seconds a client has to authenticate before it is disconnected.
    AUTH_TIMEOUT = 2.0
    # Largest frame accepted before the peer has authenticated (bytes).
    PRE_AUTH_FRAME = 64 * 1024
    # Bytes waiting to be written above which model output events are dropped.
    OUTPUT_BACKLOG = 8 * 1024 * 1024
    # Seconds of inline work (fast path) per read; later calls of that read go
    # to threads, so one read of many calls cannot hold the loop for long.
    INLINE_BUDGET = 0.01
    # An inline call longer than this (seconds) has its reply written at once
    # rather than with the rest of the read, so the client can send more work.
    INLINE_FLUSH = 0.0005
    # Replies of one read are written every this many requests, not all at
    # the end: the client reads (and sends more work) while the rest of the
    # read is handled, where one write per read makes the two sides take
    # turns (pipelined, 64 in flight: Python busy ~93% of the time instead of
    # ~70%, ~1.5x the calls/s; 8 and 16 cost more writes for less).
    FLUSH_EVERY = 32
    # Batch frames ({"batch": [...]}, negotiated in the handshake): messages up
    # to BATCH_ITEM_MAX bytes written together share one frame of at most
    # BATCH_MAX bytes (one MD5, one header, one JSON document for both sides).
    BATCH_ITEM_MAX = 16 * 1024
    BATCH_MAX = 64 * 1024
    # Longest run of spin-reads before the event loop gets control back (seconds).
    SPIN_SLICE = 0.002

    def __init__(self, server):
        self.server = server
        self.id = None
        self.authenticated = server.secret is None
        self._max_frame = server.max_frame_size
        self.spill = None
        # configure {"logRecords": true}: model code's logging records are sent
        # as log events (host_log_handler).
        self.log_records = False
        self.dropped_output = 0
        # Until it authenticates, a peer gets small frames only: an auth is a
        # few hundred bytes, and nobody unauthenticated makes us buffer and
        # parse megabytes (protocol §4).
        self._framer = Framer(
            server.max_frame_size if self.authenticated else min(server.max_frame_size, self.PRE_AUTH_FRAME)
        )
        self._read_buffer = server.read_buffer
        self._loop = server.loop
        self._loop_ident = server.loop_ident
        self._transport = None
        self._closed = False
        self._closing = False
        # The host asked for model metrics events (its auth's "metrics": true).
        self.wants_metrics = False
        self._batching = False
        # Inline calls of the current read run with the loop hidden and the
        # output routed to the running call (_enter_inline).
        self._inline_mode = False
        self._hold_inline = False  # while polling the socket (buffer_updated)
        self._inline_call = None
        self._inline_sink = None
        self._sink_token = None
        # While an inline call runs: its start (_clock), else 0.0. Read by the
        # InlineWatch thread, which writes `busy` events meanwhile (send_busy).
        self._inline_since = 0.0
        self._busy_sent = 0.0
        self._busy_armed = False
        self._wire_lock = threading.Lock()
        # Replies look for big strings (big_json.encode's fast path) once this
        # connection has seen a big request or reply: until then the look costs
        # ~10% of a small call and finds nothing. A first big reply is made the
        # slow way (the same bytes).
        self._big_seen = False
        self._lock = threading.Lock()
        self.state_lock = threading.Lock()
        self._out = []
        self._out_size = 0
        self._flush_pending = False
        # The host accepts batch frames (its auth said so): small messages are
        # queued unframed and framed together at the flush (_frames), others
        # as (header, payload, trailer); until then _out is flat frame parts.
        self._send_batches = False
        # The host reads bytes (its auth said so, protocol §3 "Bytes"):
        # bytes in results and stream items go as "$bytes", else they fail.
        self._send_bytes = False
        self.runner = CallRunner(self)
        self._host_pending = {}
        # Ids of host requests given up on (_give_up): their replies are dropped quietly.
        self._host_ignored = set()
        self._host_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._close_callbacks = []
        self._auth_timer = None
        self._expected_mac = None
        self._nonce = None
        self._inline_left = self.INLINE_BUDGET
        # Spin-read (see _spin_read): seconds to poll the socket after a read, 0 = never.
        self._spin = server.spin if _readv is not None else 0.0
        self._spin_fd = -1
        self._spin_bufs = [self._read_buffer]
        self._idle_since = 0.0
        self._last_read_items = 0

    # -- public API --------------------------------------------------------

    @property
    def spill(self):
        """This connection's ``SpillSettings`` (``None``: spill-over is off)."""
        return self._spill

    @spill.setter
    def spill(self, settings):
        self._spill = settings
        # Replies up to this many bytes go out as they are (no spill, no
        # frame-limit check, no big-string flag to update).
        limit = min(_BIG, self._max_frame)
        self._plain_limit = limit if settings is None else min(limit, settings.threshold)

    @property
    def closed(self):
        return self._closed

    @property
    def in_flight(self):
        """Threaded calls queued or running on this connection."""
        return len(self.runner.calls)

    @property
    def backlog(self):
        """Bytes queued for this connection and not yet written to the socket."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return buffered + self._out_size

    def on_close(self, callback):
        """Run ``callback(connection)`` on the loop thread when the connection ends."""
        if self._closed:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    def send_event(self, event):
        """Send ``event`` (a dict) to the client; safe from any thread."""
        try:
            data = _encode_pieces(event)
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("connection %s: dropped unserialisable event: %s", self.id, exc)
            return
        try:
            data = self._finish(data, event.get("id"), "e")
        except PyProxyError as exc:
            log.warning("connection %s: dropped event: %s", self.id, exc.message)
            return
        self.enqueue(data)

    @property
    def sends_bytes(self):
        """Whether ``bytes`` in results and stream items go to the host as
        bytes (its auth said it reads them, protocol §3 "Bytes")."""
        return self._send_bytes

    def encode_event_or_raise(self, event):
        """``event`` ready for ``enqueue``, and its encoded size in bytes
        (spilled or not): ``(payload, size)``. Raises ``TypeError``,
        ``ValueError`` or ``RecursionError`` for an event that is not JSON, a
        ``PyProxyError`` for one that cannot be sent (too large, spill
        failure)."""
        try:
            pieces = _encode_pieces(event)
        except TypeError as exc:
            # A stream item holding bytes (protocol §3, "Bytes"): inline only.
            pieces = self._with_bytes(exc, event, "data", None)
            if pieces is None:
                raise
        return self._finish(pieces, event.get("id"), "e"), sum(map(len, pieces))

    def request(self, cmd, args=None, timeout=30.0, call=None):
        """Send a Python → host request and wait for the reply (executor threads only).

        Returns the reply's ``result``; raises ``HostError`` when the
        connection closes, no reply arrives within ``timeout`` seconds, the
        call is cancelled, or the host replies with an error.
        """
        if _get_ident() == self._loop_ident:
            if call is not None and call.inline:
                # An inline call (fast path) cannot wait here: the reply is
                # read by this very thread. It is not re-run on a thread
                # either (what it did so far would happen twice): it fails
                # here, and the model runs threaded from now on.
                call.host_refused = True
                name = call.msg.get("name")
                raise HostError(
                    "Cannot call host %r from model %r: the call ran on the server's event "
                    "loop thread (the fast path of models that proved fast), which cannot "
                    "wait for a reply; later calls run on threads and can call the host "
                    "(import pyproxy at the top of the model's module, or set "
                    "threaded = True on its class, to avoid this)" % (cmd, name)
                )
            raise HostError(
                "Cannot call host %r: called on the server's event loop thread, "
                "which must stay free to read the reply (it would deadlock)" % cmd
            )
        if timeout is not None and (
            timeout.__class__ is bool or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError("Cannot call host %r: timeout must be a number of seconds > 0 or None, got %r" % (cmd, timeout))
        if self._closed:
            raise HostError("Cannot call host %r: the connection is closed" % cmd)
        if call is not None and call.is_cancelled():
            # Code that goes on after its cancel (it caught the interrupt) must
            # not reach the host: what the call does is no longer wanted.
            raise HostError("Cannot call host %r: the call was cancelled" % cmd)
        rid = next(self._host_ids)
        # The settings the file is written with are the ones to delete it
        # with, whatever a configure sets meanwhile.
        spill = self.spill
        blobs = None
        message = {"id": rid, "cmd": cmd, "args": args}
        if call is not None:
            # The call whose code sends it (protocol §7): the host holds who
            # made that call, and confines what it may do for them (a
            # tenant's call publishes to that tenant's channels only).
            message["call"] = call.id
        try:
            data = _encode_pieces(message)
        except (TypeError, ValueError, RecursionError) as exc:
            # Arguments holding bytes (protocol §3, "Bytes"), for a host that reads them.
            found = self._request_with_bytes(exc, message, spill)
            if found is None:
                raise HostError("Cannot call host %r: arguments are not JSON: %s" % (
                    cmd, not_json_reason(exc, args, "args", self._send_bytes)))
            data, blobs = found
        own = call is not None and call.thread_ident == _get_ident()
        shielded = False
        queued = False
        future = concurrent.futures.Future()
        try:
            try:
                data = self._finish(
                    data, rid, "r", cmd, spill, blobs, None if blobs is None else lambda: _base64_pieces(message, "args")
                )
            except PyProxyError as exc:
                raise HostError("Cannot call host %r: %s" % (cmd, exc.message))
            if own:
                # From the spill file's writing to the queueing of its stub, a
                # cancel's interrupt would leave the file behind: it waits until
                # the request is queued (only the call's own thread is
                # interrupted). Not during the write: a long one must stop at a
                # cancel (the write removes its file), within STUCK_GRACE.
                CallRunner.shield(call)
                shielded = True
            self._host_pending[rid] = future
            if call is not None:
                if call.host_futures is None:
                    call.host_futures = set()
                call.host_futures.add(future)
            if self._closed:
                raise HostError("Cannot call host %r: the connection is closed" % cmd)
            self.enqueue(data)
            queued = True
            try:
                # Still shielded while it waits: an interrupt that fired as
                # the future's threading.Condition was entered would leave its
                # lock held for ever, and the loop thread, failing the future
                # at the cancel (or setting the reply), blocked on it for
                # good. A cancel fails the future instead, and its interrupt
                # is raised once the wait is over.
                try:
                    result = future.result(timeout)
                finally:
                    if shielded:
                        shielded = False
                        CallRunner.unshield(call)  # raises the interrupt of a cancel that came meanwhile
                return result
            except concurrent.futures.TimeoutError:
                self._give_up(rid)
                raise HostError("Cannot call host %r: no reply within %s s" % (cmd, timeout))
            except HostError:
                if call is not None and call.is_cancelled():
                    self._give_up(rid)
                raise
            except BaseException:
                # Interrupted while waiting (a cancel's KeyboardInterrupt in
                # this thread, SystemExit...): the host's handler stops too.
                self._give_up(rid)
                raise
        finally:
            if not queued:
                if spill is not None:
                    spill.discard_name("py-%s-r%s" % (self.id, rid))
            self._host_pending.pop(rid, None)
            if call is not None and call.host_futures is not None:
                call.host_futures.discard(future)
            if shielded:  # failed before it was queued: the error goes on, and a cancel's interrupt follows it
                CallRunner.end_shield(call)

    def _give_up(self, rid):
        """Tell the host that nobody waits for host request ``rid`` any more
        (protocol §7: its handler's ``signal`` aborts); its reply, and the
        reply to this ``cancel``, are dropped quietly when they come."""
        if self._closed:
            return
        cid = next(self._host_ids)
        ignored = self._host_ignored
        if len(ignored) > 10000:  # a host that never answers must not grow it for ever
            ignored.clear()
        ignored.add(rid)
        if rid not in self._host_pending:
            # Its reply came already (after the wait timed out, before this):
            # none will come to drop the id (it stayed until the clear above).
            ignored.discard(rid)
        ignored.add(cid)
        try:
            data = self._finish(_encode_pieces({"id": cid, "cmd": "cancel", "target": rid}), cid, "r", "cancel")
            self.enqueue(data)
        except PyProxyError:
            pass

    def cancel_call(self, target):
        """Cancel threaded call ``target``; True when it was queued or running."""
        return self.runner.cancel(target)

    def close(self):
        """Flush what is queued and close the connection."""
        if self._transport is not None and not self._closed:
            self._flush()
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        if self._spin:
            sock = transport.get_extra_info("socket")
            self._spin_fd = sock.fileno() if sock is not None else -1
        self.id = self.server.connection_opened(self)
        auth = "none"
        hello = {"event": "hello", "version": PROTOCOL_VERSION, "serverId": self.server.id, "pid": self.server.pid, "batch": True, "bytes": True, "metrics": True}
        if not self.authenticated:
            auth = "hmac-sha256"
            self.server.awaiting_auth(self)
            self._nonce = secrets.token_hex(16)
            self._expected_mac = hmac.new(
                self.server.secret.encode(), self._nonce.encode(), hashlib.sha256
            ).hexdigest().encode()
            hello["nonce"] = self._nonce
            self._auth_timer = self._loop.call_later(self.AUTH_TIMEOUT, self._auth_timeout)
        hello["auth"] = auth
        self.send_event(hello)

    def abort(self):
        """Close at once, unflushed (a connection not authenticated, closed
        for room: ``Server.awaiting_auth``)."""
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._transport is not None and not self._closed:
            self._closing = True
            self._transport.abort()

    def connection_lost(self, exc):
        self._closed = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.server.connection_closed(self)
        self.runner.connection_lost()
        for future in list(self._host_pending.values()):
            fail_future(future, HostError("Cannot call host: the connection closed"))
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("connection %s: on_close callback failed", self.id)
        log.debug("connection %s closed (%s)", self.id, exc)

    def pause_writing(self):
        # The client does not read: stop reading its requests until it does.
        if not self._closed:
            self._transport.pause_reading()

    def resume_writing(self):
        if not self._closed:
            self._transport.resume_reading()

    def get_buffer(self, sizehint):
        return self._read_buffer

    def buffer_updated(self, nbytes):
        if not self._spin:
            self.data_received(self._read_buffer[:nbytes])
            return
        # Only a peer whose last request came within the spin time is waited for by spinning.
        hot = _clock() - self._idle_since < self._spin
        self._last_read_items = 0
        # Inline mode (_enter_inline) stays on from one polled read to the
        # next: switching it costs two getpid() calls, ~10% of a small call.
        self._hold_inline = hot
        try:
            self.data_received(self._read_buffer[:nbytes])
            if hot and self._last_read_items == 1:
                self._spin_read()
        finally:
            self._hold_inline = False
            if self._inline_mode:
                self._leave_inline()
        self._idle_since = _clock()

    def _spin_read(self):
        """Poll the socket for the next request for up to ``server.spin`` seconds.

        A sequential client sends its next request some tens of microseconds
        after our reply. Going back to the event loop and being woken for it
        costs more than a small call itself: the process sleeps, then runs
        with cold caches (sequential calls/s +30% on the benchmark machine).
        So after a read of one request from a peer whose last request came
        within the spin time, the socket is polled (``readv``, non-blocking,
        yielding the CPU between polls) while nothing else needs the loop:
        this is the server's only connection, no callback is ready, no
        threaded call runs (it would wait for the GIL), reading is not paused
        and reads keep bringing one request (a pipelining client is served
        better by the loop's bigger reads). The loop gets control back at
        least every ``SPIN_SLICE`` seconds (timers, signals, new connections).
        """
        fd = self._spin_fd
        if fd < 0:
            return
        ready = getattr(self._loop, "_ready", ())
        transport = self._transport
        bufs = self._spin_bufs
        spin = self._spin
        now = _clock()
        deadline = now + spin
        slice_end = now + self.SPIN_SLICE
        connections = self.server.connections
        calls = self.runner.calls
        while not (self._closing or ready or calls or len(connections) != 1 or not transport.is_reading()):
            try:
                n = _readv(fd, bufs)
            except (BlockingIOError, InterruptedError):
                now = _clock()
                if now >= deadline or now >= slice_end:
                    return
                _sched_yield()
                continue
            except OSError:
                return  # the transport's next read reports it
            if n == 0:
                return  # end of stream: the transport's next read sees it too
            self.server.spin_reads += 1
            self._last_read_items = 0
            self.data_received(self._read_buffer[:n])
            if self._last_read_items > 1:
                return  # a client with many requests in flight: bigger reads serve it better
            deadline = _clock() + spin

    def data_received(self, data):
        if self._closing:
            return
        msg = self._lone_message(data)
        if msg is not None:
            if self._run_lone(msg):
                return
            items = (msg,)
            handle = self._dispatch
        else:
            try:
                items = self._framer.feed(data)
            except FrameError as exc:
                if self.authenticated:
                    log.warning("connection %s: %s; closing", self.id, exc.message)
                else:  # a flood's stray bytes: not a line each
                    self.server.unauthenticated_refused(self, exc.message)
                self._closing = True
                self._transport.abort()
                return
            if not items:
                return
            handle = self._handle
        self._last_read_items = len(items)
        self._batching = True
        self._inline_left = self.INLINE_BUDGET
        try:
            try:
                batch = self._handle_all(items, handle)
            finally:
                if self._inline_mode and not self._hold_inline:
                    self._leave_inline()
            if batch is not None:
                self.runner.submit(batch)
        finally:
            self._batching = False
            self._flush()

    # -- request dispatch --------------------------------------------------

    def _handle_all(self, items, handle):
        """Runs ``handle`` on each item in order (frames of a read, or the
        messages of a batch frame), writing the replies made so far every
        ``FLUSH_EVERY`` items; returns the threaded work they left, or None."""
        works = None
        flush_every = self.FLUSH_EVERY
        for n, item in enumerate(items):
            if self._closing:
                break
            if n and n % flush_every == 0 and self._out:
                self._flush()  # the replies of the previous flush_every requests
            try:
                work = handle(item)
            except Exception:
                log.exception("connection %s: request handling failed", self.id)
                continue
            if work is not None:
                if works is None:
                    works = []
                if work.__class__ is list:
                    works += work  # a batch frame's threaded calls
                else:
                    works.append(work)
        return works

    def _lone_message(self, data):
        """The message of a read that is one whole small frame holding a JSON
        object (a sequential client's request), else ``None`` (the framer and
        ``_handle`` then take the read and report any error exactly)."""
        if len(data) > _LONE_MAX:
            return None  # big: the general path (it would hash it again)
        payload = self._framer.single(data)
        if payload is None:
            return None
        try:
            text = payload.decode("utf-8")
            msg, end = _raw_decode_json(text)
        except (ValueError, RecursionError):
            return None  # _handle answers it
        return msg if end == len(text) and msg.__class__ is dict else None

    def _run_lone(self, msg):
        """The fast lane of a sequential client: the lone request of a read,
        when its command has an inline fast path that takes it (a fast model's
        ``executeModel``), runs here and its reply is written at once, without
        the general loop, queue and flush; True when it was handled (else
        nothing happened and ``_dispatch`` takes it). Same checks, same
        ``Call``, same reply and errors as ``_dispatch`` and ``_run_inline``.
        """
        rid = msg.get("id")
        cmd = msg.get("cmd")
        if (rid.__class__ is not int or cmd.__class__ is not str or not self.authenticated
                or "$spill" in msg or "$bytes" in msg):
            return False
        server = self.server
        entry = server.commands.get(cmd)
        if entry is None:
            return False
        handler, threaded, inline = entry
        if inline is None or not threaded or rid in self.runner.calls:
            return False
        call = Call(self, rid, cmd, msg)
        run = inline(call)
        if run is None:
            return False
        server.requests_served += 1
        self._last_read_items = 1
        self._inline_left = self.INLINE_BUDGET
        try:
            payload = self._inline_reply(call, run)
        finally:
            if self._inline_mode and not self._hold_inline:
                self._leave_inline()
        if payload is not None and not self._out and not self._closed:
            # Nothing queued to keep the order with (its output, if any, was).
            self._transport.write(_frame(payload))
            return True
        self._batching = True
        try:
            if payload is not None:
                self.enqueue(payload)
            else:
                work = self._threaded(rid, call, handler)
                if work is not None:
                    self.runner.submit([work])
        finally:
            self._batching = False
            self._flush()
        return True

    def _handle(self, item):
        if item.__class__ is ChecksumError:
            if not self.authenticated:
                return self._refuse(None, "Cannot authenticate: corrupted frame")
            self.enqueue(self.encode_error(None, item.to_wire()))
            return None
        try:
            if len(item) > _BIG:
                self._big_seen = True
                msg = _decode_big(item)  # raises what json.loads would
            else:
                # The protocol says UTF-8, so skip json.loads' encoding sniffing;
                # raw_decode skips the whitespace regexes a compact peer never needs.
                text = item.decode("utf-8")
                try:
                    msg, end = _raw_decode_json(text)
                except ValueError:
                    end = -1
                if end != len(text):
                    msg = _decode_json(text)  # the slow path gives the exact error
        except ValueError as exc:
            msg = long_int.decode(item) if self.authenticated else None
            if msg is None:
                return self._bad(None, ProtocolError("Cannot parse payload: invalid JSON (%s)" % exc))
            return self._too_long(msg)
        except RecursionError as exc:
            return self._too_deep(item, exc)
        if msg.__class__ is not dict:
            return self._bad(None, ProtocolError("Cannot parse payload: not a JSON object"))
        return self._dispatch(msg)

    def _too_deep(self, data, exc, in_batch=False):
        """Answers a payload ``json`` cannot parse for its depth (``RecursionError``):
        its top level is read without recursion (``shallow_json``) so that a
        request gets an ``InvalidRequestError`` reply with its id, a reply to
        a Python → host request fails that request, and each message of a
        batch frame is handled on its own; the connection keeps working.
        Before authentication it is refused unread, as any bad payload is:
        what follows the depth limit is the unauthenticated peer's choice,
        and so would be the cost of scanning it."""
        reason = "JSON nested deeper than the server's parser allows (%s)" % exc
        if not self.authenticated:
            return self._refuse(None, "Cannot authenticate: " + reason)
        try:
            found = shallow_json.members(data)
        except ValueError:
            return self._bad(None, ProtocolError("Cannot parse payload: " + reason))
        rid = found.get("id")
        cmd = found.get("cmd")
        batch = found.get("batch")
        if batch.__class__ is shallow_json.Nested and rid is None and cmd is None and "event" not in found:
            if in_batch:
                return self._bad(None, ProtocolError("Cannot parse payload: a batch inside a batch"))
            return self._unbatch(self._batch_items(batch))
        if cmd is None and "ok" in found:
            future = self._host_pending.pop(rid, None)
            if future is not None:
                fail_future(future, HostError("Cannot read host reply: " + reason, "InvalidRequestError", reason))
            return None
        if cmd is None and "event" in found:
            log.info("connection %s: event from host ignored: %s", self.id, reason)
            return None
        if rid.__class__ is not int:
            return self._bad(None, ProtocolError("Cannot parse payload: " + reason))
        self.enqueue(self.encode_error(rid, InvalidRequestError("Cannot parse request %d: %s" % (rid, reason), unread=True).to_wire()))
        return None

    def _too_long(self, msg, in_batch=False):
        """Answers a well-formed message ``json`` refused for an integer longer
        than Python converts (``long_int``): as ``_too_deep`` does, a request
        gets an ``InvalidRequestError`` reply with its id, a reply to a
        Python → host request fails that request, and each message of a
        batch frame is handled on its own; the connection keeps working."""
        if msg.__class__ is not dict:
            return self._bad(None, ProtocolError("Cannot parse payload: not a JSON object"))
        rid = msg.get("id")
        cmd = msg.get("cmd")
        batch = msg.get("batch")
        if batch.__class__ is list and rid is None and cmd is None and "event" not in msg:
            if in_batch:
                return self._bad(None, ProtocolError("Cannot parse payload: a batch inside a batch"))
            return self._unbatch([_TooLong(m) if long_int.find(m) is not None else m for m in batch])
        found = long_int.find(msg)
        if found is None:
            return self._dispatch(msg)  # a batch item of a frame another item failed
        reason = long_int.describe(found)
        if rid.__class__ is not int:
            rid = None
        if cmd is None and "ok" in msg:
            future = self._host_pending.pop(rid, None) if rid is not None else None
            if future is not None:
                fail_future(future, HostError("Cannot read host reply: " + reason, "InvalidRequestError", reason))
            else:
                log.info("connection %s: reply for host request %r ignored: %s", self.id, rid, reason)
            return None
        if cmd is None and "event" in msg:
            log.info("connection %s: event from host ignored: %s", self.id, reason)
            return None
        if rid is None:
            return self._bad(None, ProtocolError("Cannot parse payload: " + reason))
        self.enqueue(self.encode_error(rid, InvalidRequestError("Cannot parse request %d: %s" % (rid, reason), unread=True).to_wire()))
        return None

    def _batch_items(self, batch):
        """The messages of a batch frame too deep as a whole: each item parsed
        on its own, a ``_TooDeep`` for those too deep themselves."""
        try:
            parts = shallow_json.items(batch)
        except ValueError:
            return None  # _unbatch: not an array
        msgs = []
        for part in parts:
            try:
                msgs.append(_decode_big(part))
            except RecursionError as exc:
                msgs.append(_TooDeep(part, exc))
            except ValueError:
                found = long_int.decode(part)
                # None: _batch_item answers it as not a JSON object.
                msgs.append(None if found is None else _TooLong(found))
        return msgs

    def _dispatch(self, msg):
        spilled = None
        if "$spill" in msg:
            spilled = self._deferred_spill(msg)
            if spilled is None:
                msg = self._unspill(msg)
                if msg is None:
                    return None
        if "$bytes" in msg and self.authenticated and spilled is None:
            msg = self._unbytes(msg)
            if msg is None:
                return None
        rid = msg.get("id")
        cmd = msg.get("cmd")
        if not self.authenticated and cmd != "auth":
            what = repr(cmd) if cmd.__class__ is str else "a message without a string 'cmd'"
            return self._refuse(rid if rid.__class__ is int else None, "Cannot run %s: not authenticated (send auth first)" % what)
        if cmd is None:
            if "ok" in msg:
                return self._on_host_reply(msg)
            if "event" in msg:
                log.debug("connection %s: event %r from host ignored", self.id, msg.get("event"))
                return None
            if "batch" in msg and rid is None:
                return self._unbatch(msg["batch"])
        if rid.__class__ is not int:
            return self._bad(None, InvalidRequestError("Cannot dispatch request: 'id' must be an integer"))
        if cmd.__class__ is not str:
            return self._bad(rid, InvalidRequestError("Cannot dispatch request: 'cmd' must be a string"))
        if cmd == "auth":
            return self._auth(rid, msg)
        server = self.server
        server.requests_served += 1
        entry = server.commands.get(cmd)
        if entry is None:
            self.enqueue(self.encode_error(rid, UnknownCommandError("Cannot run %r: unknown command" % cmd).to_wire()))
            return None
        handler, threaded, inline = entry
        call = Call(self, rid, cmd, msg)
        if threaded:
            call.spilled = spilled
            calls = self.runner.calls
            if rid in calls:
                call.drop_spilled()
                self.enqueue(self.encode_error(rid, InvalidRequestError("Cannot run request %d: that id is already in flight" % rid).to_wire()))
                return None
            if spilled is None and inline is not None and self._inline_left > 0:
                run = inline(call)
                if run is not None and self._run_inline(call, run):
                    return None
            return self._threaded(rid, call, handler)
        if self._inline_mode:
            self._leave_inline()
        try:
            result = handler(call)
        except Exception as exc:
            if not isinstance(exc, PyProxyError):
                log.exception("connection %s: handler of %r failed", self.id, cmd)
            self.enqueue(self.encode_error(rid, wire_error(exc)))
        else:
            self.enqueue(self.encode_reply(rid, result))
        return None

    def _threaded(self, rid, call, handler):
        """The work item of a call for the executor threads, or None when the
        connection has ``--max-calls`` already (answered with an error)."""
        calls = self.runner.calls
        if len(calls) >= self.server.max_calls:
            call.drop_spilled()
            self.enqueue(self.encode_error(rid, OverloadedError(
                "Cannot run request %d: %d calls are already queued or running on this connection (--max-calls)"
                % (rid, len(calls))
            ).to_wire()))
            return None
        calls[rid] = call
        return (call, handler)

    def _unbatch(self, msgs):
        """Handles the messages of a batch frame in order, like frames of their
        own (a bad one is answered alone); returns the threaded work, if any."""
        if msgs.__class__ is not list:
            return self._bad(None, ProtocolError("Cannot parse payload: 'batch' must be an array"))
        self.server.batches_received += 1
        self._last_read_items += len(msgs) - 1
        return self._handle_all(msgs, self._batch_item)

    def _batch_item(self, msg):
        if msg.__class__ is not dict:
            if msg.__class__ is _TooDeep:
                return self._too_deep(msg.data, msg.error, True)
            if msg.__class__ is _TooLong:
                return self._too_long(msg.msg, True)
            return self._bad(None, ProtocolError("Cannot parse payload: a batch item is not a JSON object"))
        if "batch" in msg and "cmd" not in msg and "id" not in msg and "event" not in msg:
            return self._bad(None, ProtocolError("Cannot parse payload: a batch inside a batch"))
        return self._dispatch(msg)

    def _run_inline(self, call, run):
        """Run a threaded command's fast path on the loop thread and queue its
        reply; False: run it threaded."""
        left = self._inline_left
        payload = self._inline_reply(call, run)
        if payload is None:
            return False
        self.enqueue(payload)
        if left - self._inline_left > self.INLINE_FLUSH:
            self._flush()
        return True

    def _inline_reply(self, call, run):
        """Run a threaded command's fast path on the loop thread; its encoded
        reply, or None: run it threaded (its output is dropped).

        Set up as on an executor thread (``current_call``, output capture);
        the running loop is hidden so model code may use ``asyncio.run``.
        """
        if not self._inline_mode:
            self._enter_inline()
        call.inline = True
        self._inline_call = call
        call_token = _set_call(call)
        start = self._inline_since = _clock()
        try:
            handled, result = run(call)
            payload = None
        except RunThreaded:
            handled = False
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from user code too
            handled = True
            wire = wire_error(exc)
            if is_user_error(exc, wire):
                log_user_error(self.id, call, wire)
            payload = self.encode_error(call.id, wire)
        finally:
            # No `busy` event may be written once this is 0 (see send_busy):
            # one being written now is waited for before anything else is.
            self._inline_since = 0.0
            if self._busy_armed:
                with self._wire_lock:
                    self._busy_armed = False
            _reset_call(call_token)
            call.inline = False
            self._inline_call = None
            sink = self._inline_sink
            self._inline_sink = None
            elapsed = _clock() - start
            self._inline_left -= elapsed
        if not handled:
            return None  # its output is dropped with the sink: the thread runs it
        if payload is None:
            payload = self.encode_reply(call.id, result, call.http)
        if sink is not None:
            sink.close()  # the output goes before the reply
        return payload

    def _enter_inline(self):
        # Once for a run of inline calls, undone (_leave_inline) before other
        # handlers run and at the end of the read (or of the socket polling
        # after it, see buffer_updated): hiding and showing the
        # running loop costs a getpid() system call each on Python < 3.12, and
        # the output sink is made only for a call that prints.
        _set_running_loop(None)
        self._sink_token = _set_sink(self._inline_write)
        self._inline_mode = True
        if self._busy_sent == 0.0:
            # First inline run of this connection (the watch is per server).
            self._busy_sent = -InlineWatch.EVERY
            InlineWatch.ensure(self.server)

    def _leave_inline(self):
        _reset_sink(self._sink_token)
        _set_running_loop(self._loop)
        self._inline_mode = False

    def send_busy(self, since, now):
        """Write a ``busy`` event for the inline call that started at ``since``
        if it still runs (the ``InlineWatch`` thread; protocol §4).

        Straight to the socket: the loop thread is inside the call and writes
        nothing until it returns, and then waits for this write to end
        (``_busy_armed``). Skipped when the transport holds unsent bytes (a
        frame may be half written) or the socket is full.
        """
        with self._wire_lock:
            self._busy_armed = True
            call = self._inline_call
            transport = self._transport
            if self._inline_since != since or call is None or self._closed or transport is None:
                return
            if transport.get_write_buffer_size():
                return
            sock = transport.get_extra_info("socket")
            if sock is None:
                return
            name = call.msg.get("name")
            event = {
                "event": "busy",
                "request": call.id,
                "model": name if isinstance(name, str) else None,
                "ms": int((now - since) * 1000),
            }
            # ASCII-escaped: a model name with any character goes out whole.
            data = _frame(json.dumps(event, separators=(",", ":")).encode())
            try:
                _write_whole(sock.fileno(), data)
            except TimeoutError:
                # Half a frame is on the wire: the stream cannot go on.
                log.warning("connection %s: closing: %s", self.id, "a busy event could not be written whole")
                self._loop.call_soon_threadsafe(transport.abort)
                return
            except OSError:
                return  # the loop finds the connection broken once the call returns
            self._busy_sent = now

    def log_record(self, level, logger, text):
        # A logging record of the inline call running now (HostLogHandler);
        # True when it went to the host.
        sink = self._inline_sink
        if sink is None:
            call = self._inline_call
            if call is None or not self.log_records:
                return False
            sink = self._inline_sink = OutputSink(self, call, True)
        return sink.log_record(level, logger, text)

    def _inline_write(self, fd, text):
        # The output sink of the inline call running now (held until it ends).
        sink = self._inline_sink
        if sink is None:
            call = self._inline_call
            if call is None:
                # Written on the loop thread between two inline calls: no call
                # owns it (logging it could write here again).
                real = sys.__stderr__
                if real is not None:
                    real.write(text)
                return
            sink = self._inline_sink = OutputSink(self, call, True)
        sink.write(fd, text)

    def _bad(self, rid, error):
        if not self.authenticated:
            return self._refuse(rid, "Cannot authenticate: " + error.message)
        self.enqueue(self.encode_error(rid, error.to_wire()))
        return None

    def _auth(self, rid, msg):
        if not self.authenticated:
            mac = msg.get("mac")
            if not isinstance(mac, str) or not hmac.compare_digest(
                mac.encode("utf-8", "replace"), self._expected_mac
            ):
                return self._refuse(rid, "Cannot authenticate: bad mac")
            self.authenticated = True
            self.server.auth_succeeded(self)
            self._framer.max_frame_size = self._max_frame
            if self._auth_timer is not None:
                self._auth_timer.cancel()
                self._auth_timer = None
        if msg.get("batch") is True and not self._send_batches:
            self._flush()  # what is queued is framed the other way
            self._send_batches = True
        if msg.get("bytes") is True:
            self._send_bytes = True
        if msg.get("metrics") is True and not self.wants_metrics:
            # Model metrics go to this host too (protocol §6, "Model metrics").
            self.wants_metrics = True
            model_metrics.wanted()
        result = {"connection": self.id, "serverId": self.server.id, "pid": self.server.pid, "maxFrameSize": self._max_frame}
        client_nonce = msg.get("clientNonce")
        if isinstance(client_nonce, str) and 0 < len(client_nonce) <= 256 and self.server.secret is not None:
            # The server's proof that it knows the secret too: a client that
            # reached someone listening in this server's place finds out.
            result["serverMac"] = hmac.new(
                self.server.secret.encode(), ("server:" + client_nonce).encode("utf-8", "replace"), hashlib.sha256
            ).hexdigest()
        self.enqueue(self.encode_reply(rid, result))
        return None

    def _refuse(self, rid, message):
        self.server.unauthenticated_refused(self, message)
        self.enqueue(self.encode_error(rid, AuthenticationError(message).to_wire()))
        self._closing = True
        self._loop.call_soon(self.close)
        return None

    def _auth_timeout(self):
        self._auth_timer = None
        if not self.authenticated and not self._closed:
            self._refuse(None, "Cannot authenticate: no auth within %s s" % self.AUTH_TIMEOUT)

    def _unspill(self, msg):
        rid = msg.get("id")
        rid = rid if rid.__class__ is int else None
        if not self.authenticated:
            return self._refuse(rid, "Cannot authenticate: spilled message before auth")
        if self.spill is None:
            return self._unspill_failed(msg, rid, SpillError("Cannot read spill file: spill-over is not configured on this connection"))
        self._big_seen = True
        try:
            return self.spill.read(msg["$spill"], msg)
        except PyProxyError as exc:  # SpillError, InvalidRequestError (nested too deep)
            log.warning("connection %s: %s", self.id, exc.message)
            return self._unspill_failed(msg, rid, exc)

    def _deferred_spill(self, msg):
        """``(settings, ref)`` for a spilled request to a threaded command,
        whose file its own call thread reads (``CallRunner``), so that the
        loop never reads a large request and a ``cancel`` arriving while the
        call waits for a thread (in the same read too: threaded work starts
        once the read is handled) drops the file unread; else None (the file
        is read here, by ``_unspill``)."""
        rid = msg.get("id")
        cmd = msg.get("cmd")
        settings = self.spill
        if (rid.__class__ is not int or cmd.__class__ is not str or settings is None
                or not self.authenticated or msg["$spill"].__class__ is not dict):
            return None
        entry = self.server.commands.get(cmd)
        if entry is None or not entry[1]:
            return None
        self._big_seen = True
        return (settings, msg["$spill"])

    def _unbytes(self, msg):
        """``msg`` with the base64 strings its ``$bytes`` names decoded
        (protocol §3, "Bytes"), or None when they cannot be: answered as a
        spill stub that cannot be read is (``_unspill_failed``), with an
        ``InvalidRequestError``."""
        try:
            return binary.decode(msg)
        except PyProxyError as exc:
            log.warning("connection %s: %s", self.id, exc.message)
            rid = msg.get("id")
            return self._unspill_failed(msg, rid if rid.__class__ is int else None, exc)

    def _unspill_failed(self, msg, rid, exc):
        """Answer a ``$spill`` stub whose message cannot be read (protocol §8).

        Only the stub's shape says what it stood for. A request stub keeps
        ``cmd``: its error reply carries the stub's id. A reply stub keeps
        ``ok`` (and has no ``cmd``): its id is one of *our* Python → host
        request ids, so that request fails and nothing is sent. A stub with
        neither (an event, or a peer that left them out) is never answered
        under its id: that id may be one of ours, and a reply carrying it
        would land in the client's id space and settle an unrelated request
        of the client's. It gets an error with ``id: null`` (the client logs
        it), and a Python → host request pending under that id fails at once
        rather than waiting for its timeout.
        """
        if "cmd" in msg:
            self.enqueue(self.encode_error(rid, exc.to_wire()))
            return None
        future = self._host_pending.pop(rid, None) if rid is not None else None
        if future is not None:
            fail_future(future, HostError("Cannot read host reply: " + exc.message, exc.type, exc.message))
        if "ok" not in msg:
            self.enqueue(self.encode_error(None, exc.to_wire()))
        return None

    def _on_host_reply(self, msg):
        rid = msg.get("id")
        future = self._host_pending.pop(rid, None)
        if future is None:
            if rid in self._host_ignored:
                self._host_ignored.discard(rid)
            else:
                log.info("connection %s: reply for unknown host request %r ignored", self.id, rid)
            return None
        if self._host_ignored:
            # Given up on while its reply was on the way (the waiting thread
            # had not yet removed it from _host_pending): no other reply comes.
            self._host_ignored.discard(rid)
        ok = msg.get("ok")
        if ok is True:
            try:
                future.set_result(msg.get("result"))
            except concurrent.futures.InvalidStateError:
                pass
            return None
        if ok is not False:
            # Not an answer either way (protocol §3: ok is a boolean): say so
            # instead of reporting an error the host never sent.
            fail_future(future, HostError("Host sent an invalid reply: ok must be true or false, got %s" % short_repr(ok, 40)))
            return None
        error = msg.get("error")
        error = error if isinstance(error, dict) else {}
        remote_type = str(error.get("type", "Error"))
        remote_message = str(error.get("message", ""))
        if remote_type == "HostError":
            # A failure of the host's handler code: its type is HostError,
            # this error's own ("HostError: Host replied HostError: ...");
            # the exception it threw (protocol §3's ``exception``) is named.
            thrown = error.get("exception")
            text = remote_message if not isinstance(thrown, str) or not thrown else "%s (%s in the host's handler)" % (remote_message, short_repr(thrown, 60) if not thrown.isidentifier() else thrown)
        else:
            text = "Host replied %s: %s" % (remote_type, remote_message)
        fail_future(future, HostError(text, remote_type, remote_message))
        return None

    # -- output ------------------------------------------------------------

    def encode_reply(self, rid, result, http=None):
        """Encoded ``{"id", "ok": true, "result"}`` (spilled or replaced by an error
        reply when needed); safe from any thread, pass it to ``enqueue``.

        ``http``: the call's ``Call.http`` (the status and headers its model
        set, ``http_meta``), checked again and sent as the reply's ``http``;
        a check that fails (a 204 with a body) makes the reply an error."""
        if http is not None:
            if http is http_meta.SENT:
                http = None
            else:
                try:
                    http = http_meta.reply_meta(http, result)
                except (TypeError, ValueError) as exc:
                    return self.encode_error(rid, wire_error(exc))
        try:
            walk = self._big_seen
            if walk and self._spill is not None and self._spill.strings:
                # The host reads string segments: big strings go to the spill
                # file raw, after the JSON (no escaping scan, no md5 of them).
                if not _has_big(result):
                    walk = False  # the walk below would find none either: one walk per small reply
                else:
                    try:
                        payload = self._segmented_reply(rid, result, http)
                    except PyProxyError as exc:  # SpillError: the file could not be written
                        return self.encode_error(rid, exc.to_wire())
                    if payload is not None:
                        return payload
            data = _encode_reply(rid, result, walk, http)
            if len(data) == 1 and len(data[0]) <= self._plain_limit:
                return data[0]  # what _finish returns for it, sooner
            if not self._big_seen and len(data[0]) > _BIG:
                self._big_seen = True
        except (TypeError, ValueError, RecursionError) as exc:
            try:
                data = self._with_bytes(exc, _reply(rid, result, http), "result", "")
            except (TypeError, ValueError, RecursionError) as again:
                # Bytes were not all that json refused (an object, a NaN next to them).
                exc, data = again, None
            if data is None:
                return self.encode_error(rid, SerializationError("Cannot send result: not JSON: %s" % (
                    not_json_reason(exc, result, "result", self._send_bytes))).to_wire())
            if data.__class__ is not list:
                return data  # a spill stub, or the error reply of a failed spill
        try:
            return self._finish(data, rid, "")
        except PyProxyError as exc:
            return self.encode_error(rid, exc.to_wire())

    def _segmented_reply(self, rid, result, http=None):
        """The stub of the reply spilled with the big strings of ``result`` as
        string segments after the JSON of the rest (protocol §8); None when
        there is none that UTF-8 can hold or the reply is not above the
        threshold: the caller encodes it as usual.

        Raises what encoding the reply raises, and ``SpillError``.
        """
        split = _split_big_strings(result, ("result",))
        if split is None or not split[1]:
            return None
        skeleton, strings = split
        pieces = _encode_pieces(_reply(rid, skeleton, http))
        size = sum(map(len, pieces))
        for _, body in strings:
            size += len(body)
        spill = self._spill
        if size <= spill.threshold:
            return None
        try:
            ref = spill.write(pieces, "py-%s-%s" % (self.id, rid), strings)
        except OSError as exc:
            # Inline: the reply as JSON (its strings escaped), never spilled again.
            inline = _encode_pieces(_reply(rid, result, http))
            size = sum(map(len, inline))
            if not self._inline_after(exc, size, spill):
                raise SpillError(self._refused_message(exc, size, spill))
            return b"".join(inline)
        return big_json.encode_bytes({"id": rid, "$spill": ref})

    def _with_bytes(self, exc, message, key, spill_tag):
        """The encoded pieces of ``message`` whose ``message[key]`` holds
        ``bytes``/``bytearray``/``memoryview`` values, sent as base64 strings
        named by ``"$bytes"`` (protocol §3, "Bytes"); None when the host did
        not ask for bytes, ``exc`` is not a ``TypeError`` or there are none
        (the caller reports ``exc``). With ``spill_tag`` (a reply) and a host
        that reads bytes segments, a message above the spill threshold goes
        to a spill file with the bytes raw after the JSON instead: the stub
        (or the error reply of a failed write) is returned, not pieces.
        Called only once ``json`` refused the message: a message without
        bytes never pays for the walk."""
        if not self._send_bytes or exc.__class__ is not TypeError:
            return None
        spill = self._spill
        rid = message.get("id")
        if spill_tag is not None and spill is not None and spill.bytes:
            split = binary.split(message[key], (key,), raw=True)
            if split is None:
                return None
            skeleton, blobs = split
            pieces = _encode_pieces(dict(message, **{key: skeleton}))
            size = sum(map(len, pieces)) + sum(len(body) for _, body in blobs)
            if size > spill.threshold:
                try:
                    ref = spill.write(pieces, "py-%s-%s%s" % (self.id, spill_tag, rid), None, blobs)
                except OSError as exc:
                    # Inline: the bytes as base64 named by "$bytes", never spilled again.
                    inline = _base64_pieces(message, key)
                    size = sum(map(len, inline))
                    if not self._inline_after(exc, size, spill):
                        return self.encode_error(rid, SpillError(self._refused_message(exc, size, spill)).to_wire())
                    return b"".join(inline)
                return big_json.encode_bytes({"id": rid, "$spill": ref})
        return _base64_pieces(message, key)

    def _request_with_bytes(self, exc, message, spill):
        """``(pieces, blobs)`` for a Python → host request whose ``args``
        hold ``bytes``/``bytearray``/``memoryview`` values (protocol §3,
        "Bytes"), or None when the host did not ask for bytes, ``exc`` is not
        a ``TypeError``, there are none, or ``args`` hold something else
        ``json`` refuses (the caller reports ``exc``). ``blobs`` is None for
        a message sent with the bytes as base64 named by ``"$bytes"``; else
        the message is above the threshold of ``spill``, whose peer reads
        bytes segments, and goes to a spill file with the bytes raw after
        the JSON (``_finish``). Called only once ``json`` refused the
        message: a request without bytes never pays for the walk."""
        if not self._send_bytes or exc.__class__ is not TypeError:
            return None
        try:
            if spill is not None and spill.bytes:
                split = binary.split(message["args"], ("args",), raw=True)
                if split is None:
                    return None
                skeleton, blobs = split
                pieces = _encode_pieces(dict(message, args=skeleton))
                if sum(map(len, pieces)) + sum(len(body) for _, body in blobs) > spill.threshold:
                    return pieces, blobs
            pieces = _base64_pieces(message, "args")
            return None if pieces is None else (pieces, None)
        except (TypeError, ValueError, RecursionError):
            return None

    def _inline_after(self, exc, size, spill):
        """True when a message of ``size`` bytes whose spill file the file
        system refused (``exc``: out of space, read-only...) goes inline
        instead: it fits the frame limit, the host's too (the host starts
        this server with its own). Counted and logged, bounded. The failure
        path only."""
        return self.server.spill_refusals.inline_after(exc, size, self._max_frame, spill.dir)

    def _refused_message(self, exc, size, spill):
        """The ``SpillError`` message of a spill file that could not be written."""
        return refused_message(exc, size, self._max_frame, spill.dir)

    def encode_error(self, rid, error):
        """Encoded ``{"id", "ok": false, "error"}`` for the wire error object ``error``."""
        try:
            data = _encode_pieces({"id": rid, "ok": False, "error": error}, True)
        except (TypeError, ValueError, RecursionError) as exc:
            # A field nested too deep (or circular): the error still goes out, with its strings.
            kept = {key: value for key, value in error.items() if value.__class__ is str}
            kept.setdefault("type", "PyProxyError")
            kept["message"] = "%s [error fields dropped: not JSON (%s)]" % (kept.get("message", ""), exc)
            data = _encode_pieces({"id": rid, "ok": False, "error": kept}, True)
        try:
            return self._finish(data, rid, "")
        except PyProxyError as exc:
            return big_json.encode_bytes({"id": rid, "ok": False, "error": exc.to_wire()}, True)

    def _finish(self, pieces, rid, kind, cmd=None, spill=_CURRENT_SPILL, blobs=None, inline=None):
        """The payload for encoded ``pieces`` (``big_json.encode``): the message, or
        the reference to the spill file it went to when above the threshold;
        refused above the frame limit.

        ``kind`` keeps spill file names unique: ``""`` for replies (named
        after the host's request id), ``"r"`` for Python → host requests,
        ``"e"`` for events (numbered per connection), as are replies with
        ``id: null`` (several may wait to be read at once). ``spill``: the
        settings to use (default: the connection's at this moment).
        ``blobs``: bytes segments (``spill.write``) of a message that
        ``_request_with_bytes`` found above the threshold of ``spill``;
        ``inline``: with ``blobs``, a function giving the message's pieces
        with its bytes as base64 (``_base64_pieces``), sent instead when the
        file system refuses the spill file and they fit the frame limit.
        """
        if spill is _CURRENT_SPILL:
            spill = self.spill
        if len(pieces) == 1:
            data = pieces[0]
            size = len(data)
        else:
            data = None  # joined only when it goes inline: a spill file is written piece by piece
            size = sum(map(len, pieces))
        if blobs is not None:
            size += sum(len(body) for _, body in blobs)
        if spill is not None and size > spill.threshold:
            if kind == "e" or rid is None:
                tag = "e%d" % next(self._event_ids)
            else:
                tag = "%s%s" % (kind, rid)
            try:
                name = "py-%s-%s" % (self.id, tag)
                ref = spill.write(pieces, name) if blobs is None else spill.write(pieces, name, None, blobs)
            except OSError as exc:
                if blobs is not None:
                    # Its pieces hold nulls where the bytes go: inline, the bytes go as base64.
                    if inline is None:
                        raise SpillError(self._refused_message(exc, size, spill))
                    pieces = inline()
                    data = None
                    size = sum(map(len, pieces))
                if not self._inline_after(exc, size, spill):
                    raise SpillError(self._refused_message(exc, size, spill))
                ref = None  # it goes inline, below
            if ref is not None:
                if rid is None:
                    return big_json.encode_bytes({"$spill": ref})
                if cmd is not None:
                    # A request stub keeps its cmd so the host can tell it from a reply when the file fails.
                    return big_json.encode_bytes({"id": rid, "cmd": cmd, "$spill": ref})
                return big_json.encode_bytes({"id": rid, "$spill": ref})
        if size > self._max_frame:
            raise SerializationError(
                "Cannot send message: %d bytes above the frame limit %d (configure spill-over)" % (size, self._max_frame)
            )
        return b"".join(pieces) if data is None else data

    def enqueue(self, payload):
        """Queue one framed message; safe from any thread."""
        batches = self._send_batches
        if batches and len(payload) <= self.BATCH_ITEM_MAX:
            entry = payload  # framed at the flush, with its neighbours
        else:
            digest = md5_digest(payload)
            entry = (_pack_header(MAGIC, VERSION, digest, len(payload)), payload, digest)
        with self._lock:
            if batches:
                self._out.append(entry)
            else:
                self._out += entry
            self._out_size += len(payload) + 41
            if self._flush_pending:
                return
            if _get_ident() != self._loop_ident:
                # Scheduled before the flag is set, under the lock: a cancel's
                # interrupt on a call's thread in between leaves the flag
                # False (the next enqueue schedules again; at worst one
                # flush more), never set with no flush coming. The loop's
                # ``_flush`` clears the flag after it takes the lock.
                try:
                    self._loop.call_soon_threadsafe(self._flush)
                except RuntimeError:  # loop closed: the server is exiting
                    return
                self._flush_pending = True
                return
            self._flush_pending = True  # the loop thread: never interrupted
        if not self._batching:
            self._loop.call_soon(self._flush)

    def _flush(self):
        with self._lock:
            self._flush_pending = False
            if not self._out:
                return
            parts = self._out
            self._out = []
            self._out_size = 0
        if not self._closed and self._transport is not None:
            if not self._send_batches:
                self._transport.write(b"".join(parts))
            elif len(parts) == 1 and parts[0].__class__ is bytes:
                self._transport.write(_frame(parts[0]))  # one message (a sequential client): no batch
            else:
                self._transport.write(b"".join(self._frames(parts)))

    def _frames(self, entries):
        """The bytes to write for queued ``entries``: framed messages (tuples
        of header, payload, trailer) as they are; runs of unframed small
        payloads (``_send_batches``) as one frame each, ``{"batch": [...]}``
        when there are several, up to ``BATCH_MAX`` bytes."""
        parts = []
        run = []
        size = 0
        batches = 0
        # A batch frame's payload is 11 bytes more than the items' sizes
        # counted here (``{"batch":[`` + ``]}``, each item with its comma):
        # never above this server's own frame limit either, which is what a
        # client is told to read (``maxFrameSize``).
        limit = min(self.BATCH_MAX, self._max_frame - 11)
        for entry in entries:
            if entry.__class__ is tuple:
                if run:
                    batches += _frame_run(run, parts)
                    run = []
                    size = 0
                parts += entry
                continue
            n = len(entry) + 1
            if size + n > limit and run:
                batches += _frame_run(run, parts)
                run = []
                size = 0
            run.append(entry)
            size += n
        if run:
            batches += _frame_run(run, parts)
        self.server.batches_sent += batches
        return parts


def _write_whole(fd, data):
    """Write all of ``data`` to the non-blocking socket ``fd``, or nothing when
    it is full: a frame begun is always finished (waiting for room)."""
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        return
    view = memoryview(data)[written:]
    deadline = time.monotonic() + _WHOLE_WRITE_LIMIT
    while view:
        if time.monotonic() > deadline:
            raise TimeoutError("the peer has not read for %.0f s" % _WHOLE_WRITE_LIMIT)
        select.select((), (fd,), (), 1.0)
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            pass


# Seconds _write_whole waits for room to finish a frame it began.
_WHOLE_WRITE_LIMIT = 5.0


def _frame_run(payloads, parts):
    """Appends the frame of ``payloads`` to ``parts``: the payload itself when
    alone, else the batch ``{"batch":[p1,p2,...]}``; 1 for a batch, else 0."""
    batched = len(payloads) > 1
    payload = b'{"batch":[' + b",".join(payloads) + b"]}" if batched else payloads[0]
    digest = md5_digest(payload)
    parts += (_pack_header(MAGIC, VERSION, digest, len(payload)), payload, digest)
    return 1 if batched else 0


class _TooLong:
    """A batch item holding an integer longer than Python converts (see ``Connection._too_long``)."""

    __slots__ = ("msg",)

    def __init__(self, msg):
        self.msg = msg


class _TooDeep:
    """A batch item ``json`` could not parse for its depth (see ``Connection._too_deep``)."""

    __slots__ = ("data", "error")

    def __init__(self, data, error):
        self.data = data
        self.error = error
