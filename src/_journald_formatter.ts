/**
 * The `journald` log format of `serve` (`--log-format journald`): each line
 * of a record prefixed with its syslog priority (`<3>` for an error), which
 * systemd-journald reads from a service's stderr (`SyslogLevelPrefix=`, on
 * by default) as the record's priority, so `journalctl -p warning` finds the
 * warnings; no time stamp, as the journal adds its own. Internal.
 *
 * @module
 */
import {
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  type TextFormatter,
} from "@logtape/logtape";

/** syslog(3) priorities of LogTape's levels. */
const PRIORITY: Record<LogLevel, number> = {
  trace: 7,
  debug: 7,
  info: 6,
  warning: 4,
  error: 3,
  fatal: 2,
};

/**
 * A formatter writing `<N>` before every line of a record (a traceback's
 * lines too: the journal makes each line a record of its own, each at the
 * record's priority), then the level, the category and the message.
 *
 * @example
 * ```ts ignore
 * getConsoleSink({ formatter: journaldFormatter() });
 * // <4>WRN pyproxy·pool worker "w1" (pid 20877) exited: "killed by SIGKILL"
 * ```
 */
export function journaldFormatter(): TextFormatter {
  // Strings as they are, their newlines kept (a traceback a model logged):
  // each line is prefixed below, so none can pass for a record of another
  // priority.
  const text = getTextFormatter({
    timestamp: "none",
    value: "bare",
    sanitize: { newlines: "preserve" },
  });
  return (record: LogRecord): string => {
    const prefix = `<${PRIORITY[record.level] ?? 6}>`;
    const body = text(record).replace(/\r?\n$/, "");
    return `${prefix}${body.replaceAll("\n", `\n${prefix}`)}\n`;
  };
}
