// A destination in JavaScript: POSTs each batch to a webhook as JSON, with fetch().
//
// The request: `POST <url>` with body `{"id": <batch id>, "pipeline": <name>, "rows": [...]}`
// (`rows` is the batch's rows array as the host gave it), headers `Content-Type:
// application/json`, `Idempotency-Key: <batch id>` (a batch delivered again carries the same
// id) and, when the `token` secret is set, `Authorization: Bearer <token>`.
//
// Configuration: `url` (required, `http://` or `https://`); `token` (optional, pass it with
// `--secret token=ENV_VAR`). The host must allow the URL's origin with `--allow-host`. The
// module declares both keys (the `lifecycle` export): the host refuses any other key, and a
// run without `url`, at start; `init` checks that `url` is an http(s) URL before any row is
// read.
//
// The answer decides what happens to the batch:
//
// - 2xx: delivered. A JSON body `{"rejected": [{"index": I, "reason": "..."}]}` names rows
//   the receiver did not take; the host keeps them as dead letters.
// - 408, 429, 5xx, or no response (network error, timeout, and also an origin the host does
//   not allow: fetch() does not tell them apart): retry later, after `Retry-After` when the
//   receiver sent one.
// - 3xx and any other 4xx: fatal; the pipeline stops with the status and the start of the
//   body.
//
// Built with componentize-js against `wit/` (world `destination`, `tidemark:processor@0.2.0`),
// with fetch() (its `http` feature) and without `-d http`; see README.md.

import { config, log } from "tidemark:processor/host@0.2.0";

// How much of a response body is read at most, and how much is shown in an error message.
const MAX_BODY = 1 << 20;
const SHOWN = 300;

const CONFIG_KEYS = [
  { name: "url", description: "the webhook, http:// or https://", required: true, secret: false },
  { name: "token", description: "bearer token (--secret token=ENV_VAR)", required: false, secret: true },
];

/** A failure retrying cannot fix: the pipeline stops with this message. */
class Fatal extends Error {}

/** A failure that may pass: the host hands the same batch again, after `afterMs` if given. */
class RetryLater extends Error {
  constructor(message, afterMs) {
    super(message);
    this.afterMs = afterMs;
  }
}

/** The `url` configuration key, checked to be an http(s) URL. */
function webhookUrl() {
  const url = config("url");
  if (!url) throw new Fatal("config url is not set: pass --set url=https://…");
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || !["http:", "https:"].includes(parsed.protocol) || !parsed.host) {
    throw new Fatal(`config url=${JSON.stringify(url)} is not an http:// or https:// URL`);
  }
  return url;
}

export const lifecycle = {
  configKeys() {
    return CONFIG_KEYS;
  },
  // Called once at start, before any row is read: a thrown string stops the run there, exit 2.
  init() {
    try {
      webhookUrl();
    } catch (err) {
      throw err.message;
    }
  },
};

export const deliverer = {
  // componentize-js runs the event loop until the promise settles: fetch() works here.
  async deliver(batch) {
    try {
      return await deliver(batch);
    } catch (err) {
      // componentize-js passes on what is thrown here as the contract's `processor-error`,
      // as it is: a thrown Error would lose its message.
      throw processorError(err);
    }
  },
};

/** `err` in the contract's terms; anything but our own two (a bug) is fatal with its stack. */
function processorError(err) {
  if (err instanceof RetryLater) {
    return { tag: "retry-later", val: { message: err.message, afterMs: err.afterMs } };
  }
  if (err instanceof Fatal) return { tag: "fatal", val: err.message };
  return { tag: "fatal", val: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) };
}

async function deliver(batch) {
  const url = webhookUrl();
  const headers = { "content-type": "application/json", "idempotency-key": batch.id };
  const token = config("token");
  if (token) headers.authorization = `Bearer ${token}`;
  // The rows go out as the host wrote them: no parse and re-encode of the whole batch.
  const body = `{"id":${JSON.stringify(batch.id)},"pipeline":${JSON.stringify(batch.pipeline)},"rows":${batch.rows}}`;
  const response = await post(url, headers, body);
  const text = await readBody(response);
  const shown = text.slice(0, SHOWN);
  const status = response.status;
  if (status >= 200 && status < 300) {
    const rejected = rejections(text, batch.rows);
    log("debug", `batch ${batch.id}: HTTP ${status}, ${rejected.length} rows rejected`);
    return rejected;
  }
  if (status === 408 || status === 429 || (status >= 500 && status < 600)) {
    throw new RetryLater(`POST ${url}: HTTP ${status}: ${shown}`, retryAfterMs(response.headers.get("retry-after")));
  }
  throw new Fatal(`POST ${url}: HTTP ${status}: ${shown}`);
}

/** Sends the request; one that gets no response is retried later. */
async function post(url, headers, body) {
  try {
    // redirect: "manual": a 3xx is the receiver's answer (fatal), not a request to another origin.
    return await fetch(url, { method: "POST", headers, body, redirect: "manual" });
  } catch (err) {
    // fetch() rejects with the same TypeError whatever wasi:http said: a refused connection,
    // a timeout, or an origin the host does not allow (which its log names, with the
    // --allow-host that allows it). All are answered as may-pass.
    const why = err instanceof Error ? err.message : String(err);
    throw new RetryLater(`POST ${url}: no response (${why}): is the receiver up, and its origin allowed with --allow-host?`);
  }
}

/** Up to `MAX_BODY` bytes of the response's body, as text. */
async function readBody(response) {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  try {
    while (size < MAX_BODY) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // The connection broke: what came is all there is.
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(bytes.subarray(0, MAX_BODY));
}

/** `Retry-After` (seconds, or an HTTP date) in milliseconds; undefined when absent or unreadable. */
function retryAfterMs(value) {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const when = Date.parse(text);
  return Number.isNaN(when) ? undefined : Math.max(0, when - Date.now());
}

/** The rejected rows a 2xx body lists (none when it lists none or is not JSON). */
function rejections(text, rows) {
  if (text.trim() === "") return [];
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    return [];
  }
  const listed = answer !== null && typeof answer === "object" ? answer.rejected : undefined;
  if (!Array.isArray(listed) || listed.length === 0) return [];
  const count = JSON.parse(rows).length;
  return listed.map((item) => {
    const index = item !== null && typeof item === "object" ? item.index : undefined;
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new Fatal(`the webhook rejected a row that is not in the batch: ${JSON.stringify(item)}`);
    }
    return { index, reason: item.reason == null ? "rejected" : String(item.reason) };
  });
}
