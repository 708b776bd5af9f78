"""The built-in commands of protocol §6, installed into every ``Server``.

``auth`` is handled by the connection itself (it changes connection state);
everything else is an ordinary handler registered with ``Server.register``,
exactly as extension modules do it.
"""

import os
import sys

from .call import current_batch
from .errors import InvalidRequestError, PyProxyError
from .execution import is_user_error, log_user_error, wire_error
from .http_meta import reply_meta
from .model_metrics import registry as model_metrics
from .own_group import group_grace_ms
from .spill import SpillSettings
from .stream_producer import StreamProducer

__all__ = ["install"]


def install(server):
    """Register the built-in commands on ``server``."""
    models = server.models

    def ping(call):
        return "pong"

    def server_status(call):
        return server.status()

    def stop_server(call):
        # How long the models' close() may hold the exit: the host waits as
        # long before it kills the process (additive: only when some has one).
        # Then what model code started gets its SIGTERM's grace (own_group).
        close_ms = models.close_bound_ms() + group_grace_ms()
        server.stop(0, close_ms)
        return {"stopping": True, "closeMs": close_ms} if close_ms else {"stopping": True}

    def configure(call):
        conn = call.connection
        msg = call.msg
        if "logRecords" in msg:
            log_records = msg["logRecords"]
            if type(log_records) is not bool:
                raise InvalidRequestError("Cannot configure: 'logRecords' must be true or false")
            conn.log_records = log_records
        if "spill" in msg:
            conn.spill = SpillSettings.from_wire(msg["spill"])
        return {"spill": conn.spill.to_wire() if conn.spill is not None else None, "logRecords": conn.log_records}

    def cancel(call):
        target = call.msg.get("target")
        if type(target) is not int:
            raise InvalidRequestError("Cannot cancel: 'target' must be a request id (integer)")
        return {"cancelled": call.connection.cancel_call(target)}

    def add_model(call):
        return models.add(call.msg.get("name"), call.msg, call.cancelled.is_set)

    def update_model(call):
        return models.update(call.msg.get("name"), call.msg, call.cancelled.is_set)

    def remove_model(call):
        name = call.msg.get("name")
        result = models.remove(name)
        model_metrics.forget_model(name)
        return result

    def init_model(call):
        msg = call.msg
        return models.init(msg.get("name"), msg.get("dataFile"))

    get_model = models.get

    def execute_model(call):
        msg = call.msg
        return get_model(msg.get("name")).run(msg.get("msg"), call)

    def execute_batch(call):
        msg = call.msg
        msgs = msg.get("msgs")
        if type(msgs) is not list or not msgs:
            raise InvalidRequestError("Cannot run executeBatch: 'msgs' must be a non-empty list of messages")
        split = msg.get("split")
        if split is not None and type(split) is not bool:
            raise InvalidRequestError("Cannot run executeBatch: 'split' must be true or false")
        entry = get_model(msg.get("name"))
        size = entry.batch_size
        # Each part of the batch runs with the request ids of its messages
        # (host.request_ids(); protocol §6, requestIds), their forwarded
        # headers (host.message_headers(); messageHeaders) and their trace
        # contexts (host.trace_contexts(); traceContexts), and their callers
        # (host.callers(); callers).
        ids = call.request_ids
        heads = call.message_headers
        traces = call.trace_contexts
        callers = call.callers
        if split:
            # The messages were gathered for another version of the model (an
            # updateModel swapped it while they were on their way): run them
            # as this version takes them, in batches of its size or one by one.
            results = []
            if size is None:
                for i, one in enumerate(msgs):
                    token = current_batch.set(
                        ((ids[i],), False, (heads[i],), i, (traces[i],), (callers[i],))
                    )
                    try:
                        results.append(entry.run(one, call))
                    except KeyboardInterrupt:
                        raise  # the call was cancelled
                    except BaseException as exc:  # SystemExit included, as for executeModel
                        results.append(exc)
                    finally:
                        current_batch.reset(token)
            else:
                for start in range(0, len(msgs), size):
                    end = start + size
                    token = current_batch.set(
                        (
                            tuple(ids[start:end]),
                            True,
                            tuple(heads[start:end]),
                            start,
                            tuple(traces[start:end]),
                            tuple(callers[start:end]),
                        )
                    )
                    try:
                        results.extend(entry.run_batch(msgs[start:end]))
                    finally:
                        current_batch.reset(token)
        elif size is None:
            raise InvalidRequestError(
                "Cannot run executeBatch: model %r does not batch (no batch_size)" % entry.name
            )
        elif len(msgs) > size:
            raise InvalidRequestError(
                "Cannot run executeBatch: %d messages for model %r, whose batch_size is %d"
                % (len(msgs), entry.name, size)
            )
        else:
            token = current_batch.set(
                (tuple(ids), True, tuple(heads), 0, tuple(traces), tuple(callers))
            )
            try:
                results = list(entry.run_batch(msgs))
            finally:
                current_batch.reset(token)
        # The statuses and headers set per message (host.set_status(...,
        # index=)): the result's "http", by message index, as "errors".
        http = call.http
        call.http = None
        if http is not None:
            http = _batch_meta(http, results)
        errors = None
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                wire = wire_error(result)
                if is_user_error(result, wire):
                    # The line names the request id of this message only.
                    log_user_error(call.connection.id, call, wire, ids[i])
                if errors is None:
                    errors = {}
                errors[str(i)] = wire
                results[i] = None
        reply = {"results": results} if errors is None else {"results": results, "errors": errors}
        if http:
            reply["http"] = http
        return reply

    streams = server.item_streams

    def execute_stream(call):
        # The first burst; the producer parks the call while its reader is
        # behind and runs the next bursts itself (StreamProducer.run).
        msg = call.msg
        entry = get_model(msg.get("name"))
        # Sent as the model starts (after a threadsafe = False model's turn):
        # a stream cancelled before has not run, and the host says so.
        start = {"event": "streamStart", "serverId": server.id, "pid": os.getpid()}
        return StreamProducer(entry, msg.get("msg"), call, streams, start).run(call)

    def item_ack(call):
        target = call.msg.get("target")
        seq = call.msg.get("seq")
        if type(target) is not int or type(seq) is not int:  # bool is an int subclass
            raise InvalidRequestError("Cannot ack items: 'target' and 'seq' must be integers")
        stream = streams.get((call.connection, target))
        if stream is not None:
            stream.ack(seq)
        return {"acked": stream is not None}

    def may_run_inline(call):
        # Errors (unknown model, bad name) are answered by the threaded path.
        try:
            entry = get_model(call.msg.get("name"))
        except PyProxyError:
            return None
        # ``threaded: true``: the host's mark of a model one of whose inline
        # calls hung a worker (protocol §6); the call runs on a call thread.
        if entry.inline_ready and call.msg.get("threaded") is not True:
            return entry.run_inline
        return None

    server.register("ping", ping, threaded=False)
    server.register("serverStatus", server_status, threaded=False)
    server.register("stopServer", stop_server, threaded=False)
    server.register("configure", configure, threaded=False)
    server.register("cancel", cancel, threaded=False)
    # These run user code (module import, constructors, init, execute, the
    # close() of a version removed or replaced). Model management runs on
    # elastic threads: it must not wait behind model calls.
    server.register("removeModel", remove_model, threaded=True, elastic=True)
    server.register("addModel", add_model, threaded=True, elastic=True)
    server.register("updateModel", update_model, threaded=True, elastic=True)
    server.register("initModel", init_model, threaded=True, elastic=True)
    server.register("executeModel", execute_model, threaded=True, inline=may_run_inline)
    server.register("executeBatch", execute_batch, threaded=True)
    server.register("executeStream", execute_stream, threaded=True)
    server.register("itemAck", item_ack, threaded=False)


def _batch_meta(http, results):
    """The ``http`` of an executeBatch's result: ``{"<index>": meta}`` for the
    messages that succeeded; a message whose meta fails its check at send
    (a 204 with a body) becomes that message's error in ``results``."""
    out = {}
    for i, meta in http.items():
        if i >= len(results) or isinstance(results[i], BaseException):
            continue  # its error wins
        try:
            wire = reply_meta(meta, results[i])
        except (TypeError, ValueError) as exc:
            results[i] = exc
            continue
        if wire is not None:
            out[str(i)] = wire
    return out


PYTHON_VERSION = "%d.%d.%d" % sys.version_info[:3]
