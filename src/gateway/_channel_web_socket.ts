/**
 * Writes a channel subscription to a WebSocket subscriber.
 *
 * @module
 */
import type { ChannelEvent, ChannelHub, Subscription } from "./channels.ts";
import { stringifyJson } from "../_exact_json.ts";

/** Unsent WebSocket bytes tolerated before a subscriber counts as too slow. */
const WS_MAX_BUFFERED = 4 * 1024 * 1024;

/**
 * Sends `sub`'s messages to `socket` until either ends, and calls `release`
 * once it has. A subscriber too slow (more than 4 MiB unsent) is dropped with
 * a `dropped` frame and close code 1008. A connection that fails (its ping
 * unanswered for 30 s: a tab that far behind, or a client gone without
 * closing; the socket's `error` event, which the Bun adapter fires for a
 * 1006 close as Deno does) is dropped too, so that it is logged and counted
 * as one, though no frame can reach it. Each message frame has its `epoch`; `restartFrame`
 * (the client sent an epoch): a resume across a restart starts with a
 * `{"type": "restart", "channel", "epoch", "seq": 0}` frame.
 *
 * @example
 * ```ts ignore
 * pumpWebSocket(hub, socket, hub.subscribe("events"), false, () => {});
 * ```
 */
export function pumpWebSocket(
  hub: ChannelHub,
  socket: WebSocket,
  sub: Subscription,
  restartFrame: boolean,
  release: () => void,
): void {
  // The kept history the subscription starts with (queued by subscribe,
  // just before): sent as the socket takes it, not dropped for the unsent
  // bytes it makes (a resume across a restart replays the whole history,
  // up to 50 messages of the 1 MiB body limit: the 4 MiB bound dropped such
  // a subscriber at once, and again at each reconnect). Live messages keep
  // the bound.
  let replay = sub.buffered;
  const send = (ev: ChannelEvent): void => {
    if (ev.type === "dropped") {
      socket.send(JSON.stringify({ type: "dropped", reason: ev.reason }));
      socket.close(1008, "dropped");
      return;
    }
    // WebSocket send has no backpressure: bound what waits in the socket instead.
    if (socket.bufferedAmount > WS_MAX_BUFFERED) {
      sub.drop(
        `subscriber too slow: more than ${WS_MAX_BUFFERED} bytes unsent`,
      );
      return;
    }
    const { channel, seq, epoch, time } = ev.message;
    const data = hub.wireData(ev.message);
    socket.send(
      stringifyJson({ type: "message", channel, seq, epoch, time, data })!,
    );
  };
  socket.onopen = async () => {
    try {
      if (restartFrame && sub.restarted) {
        socket.send(
          // seq 0, the new numbering's start, as the SSE marker's id: a page
          // that keeps each frame's epoch and seq for its resume point then
          // resumes from it, not from its old seq under the new epoch (which
          // skipped the new numbering up to that seq when the connection
          // dropped before the next message).
          JSON.stringify({
            type: "restart",
            channel: sub.channel,
            epoch: sub.epoch,
            seq: 0,
          }),
        );
      }
      for await (const ev of sub) {
        if (replay > 0) {
          replay--;
          await drained(socket);
        }
        if (socket.readyState !== WebSocket.OPEN) break;
        send(ev);
      }
    } catch {
      // the socket closed under us
    } finally {
      sub.close();
      release();
      if (socket.readyState === WebSocket.OPEN) socket.close(1001, "closing");
    }
  };
  socket.onclose = () => {
    sub.close();
    release();
  };
  socket.onerror = (event) => {
    // Deno closes a connection whose ping goes unanswered for 30 s: behind a
    // tab that far behind, the ping waits after the unsent messages. Without
    // this the subscriber vanished unlogged and uncounted (the page saw 1006).
    const message = (event as ErrorEvent).message;
    sub.drop(
      `subscriber lost: ${
        message ? message : "the connection failed"
      } (too far behind, or gone without closing)`,
    );
    sub.close();
    release();
  };
}

/** How often a replay checks that the socket sent what it was given. */
const DRAIN_POLL_MS = 10;

/**
 * Resolves once `socket` has at most `WS_MAX_BUFFERED` bytes unsent, or is
 * no longer open (a WebSocket has no event for it: polled).
 */
async function drained(socket: WebSocket): Promise<void> {
  while (
    socket.readyState === WebSocket.OPEN &&
    socket.bufferedAmount > WS_MAX_BUFFERED
  ) {
    await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
  }
}
