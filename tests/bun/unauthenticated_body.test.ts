// A request without a valid token whose body is slow, under Bun.serve
// (HTTP/1.1 only): its 401 comes at once, never after the body or the
// body's 408, and the gateway closes the connection rather than hold the
// body (Connection: close). Before: the 401 waited up to a second for the
// body (as other refusals do), and the connection stayed open after it, Bun
// reading the rest of the body for as long as the client sent it.
import { expect, test } from "bun:test";
import { connect } from "node:net";
import { ECHO_MODEL, withGateway } from "./_helpers.ts";

const TOKEN = "bun-unauthenticated-body-token-0123456789";

/** Sends `text` on a new connection to `port`; its answer once closed (or "open"). */
function answerOf(port: number, text: string) {
  const sock = connect(port, "127.0.0.1");
  let answer = "";
  sock.setEncoding("utf8");
  sock.on("data", (chunk: string) => answer += chunk);
  sock.on("error", () => {});
  sock.write(text);
  const closed = new Promise<string>((resolve) => {
    const timer = setTimeout(
      () => resolve(`open after 10 s: ${answer}`),
      10_000,
    );
    sock.once("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
  return { sock, closed };
}

test(
  "gateway on Bun: a request without a valid token whose body is slow gets its 401 at once and its connection closed (Content-Length and chunked)",
  async () => {
    await withGateway(
      { "echo.py": ECHO_MODEL },
      { token: TOKEN },
      async (server) => {
        for (
          const framing of [
            'Content-Length: 1000\r\n\r\n{"a": 1',
            'Transfer-Encoding: chunked\r\n\r\n7\r\n{"a": 1\r\n',
          ]
        ) {
          const sent = answerOf(
            server.port,
            `POST /v1/models/echo/execute HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n` +
              "Authorization: Bearer wrong-token-0123456789\r\n" +
              `Content-Type: application/json\r\n${framing}`,
          );
          try {
            // The rest of the body never comes.
            const answer = await sent.closed;
            expect(answer).toStartWith("HTTP/1.1 401");
            expect(answer.toLowerCase()).toContain("connection: close");
            expect(answer).toContain('"type":"Unauthorized"');
          } finally {
            sent.sock.destroy();
          }
        }
      },
    );
  },
  30_000,
);
