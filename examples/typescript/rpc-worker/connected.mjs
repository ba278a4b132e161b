// A logger for the SDK that stays quiet below warnings and tells when the SSE stream is open:
// the server does not queue messages for a process that is not connected yet.
export function quietLogger(name) {
  let resolve;
  const connected = new Promise((r) => (resolve = r));
  const logger = {
    debug() {},
    info(fields, msg) {
      if (msg === "adapter connected" || msg === "adapter reconnected") resolve(); // @resonatehq/sdk 0.11.5
    },
    warn: (fields, msg) => console.error(`${name} warn:`, msg, JSON.stringify(fields)),
    error: (fields, msg) => console.error(`${name} error:`, msg, JSON.stringify(fields)),
  };
  return { logger, connected };
}

export async function within(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${seconds} s`)), seconds * 1000);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
