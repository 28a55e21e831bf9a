// Keeps the rows that match a condition and reshapes them.
//
// Configuration (`--set key=value`), all optional; the module declares these keys, so the
// host refuses any other at start, and `init` checks their values before any row is read:
//
// - `where`: one condition `COLUMN OP VALUE`, OP one of `=`, `!=`, `<`, `<=`, `>`, `>=`.
//   VALUE is a number (`score >= 10`), `true`, `false`, `null`, a "quoted string" or a bare
//   word (`plan = pro`). Numbers compare with numbers and with numeric strings (the host
//   renders exact decimals as strings); `<`, `<=`, `>`, `>=` compare two strings by code
//   point; a comparison between anything else does not match. Without `where`, every row
//   is kept. Deletes are filtered like upserts.
// - `select`: the columns to keep, in that order, comma-separated; `old:new` renames a
//   column. A selected column the row lacks comes out as null. Without `select`, rows keep
//   every column.
// - `reject`: a condition in the form of `where`; a row matching it is rejected: the host keeps
//   it as a dead letter (`host dead-letters`), with this module and the condition as reason,
//   and the rest of the batch goes on. Checked before `where`.
//
// Errors: a bad key stops the run at start with init's message. An exception thrown while
// transforming fails the batch as `fatal`, with its message and stack.
//
// Built with componentize-js against `wit/` (world `transform`); see README.md.

import { config, log } from "tidemark:processor/host@0.2.0";

const OPERATORS = ["<=", ">=", "!=", "=", "<", ">"];

/** Parses `where` into `{column, op, value}`; throws a message naming the problem. */
function parseCondition(key, text) {
  const match = /^\s*([A-Za-z_][A-Za-z0-9_$]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$/.exec(text);
  if (!match) {
    throw new Error(
      `${key}=${JSON.stringify(text)} is not a condition: write COLUMN OP VALUE, OP one of ${OPERATORS.join(" ")}`,
    );
  }
  const [, column, op, raw] = match;
  return { column, op: op === "==" ? "=" : op, value: parseValue(key, raw), text: text.trim() };
}

function parseValue(key, raw) {
  if (raw === "null") return null;
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"')) {
    try {
      return JSON.parse(raw);
    } catch {
      throw new Error(`${key}: ${raw} is not a valid quoted string`);
    }
  }
  if (raw !== "" && Number.isFinite(Number(raw))) return Number(raw);
  return raw;
}

/** `value` as a finite number when it is one or a numeric string, else undefined. */
function asNumber(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (typeof value === "string" && value.trim() !== "") {
    const n = Number(value);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/** -1, 0 or 1; undefined when `a` and `b` cannot be ordered. */
function compare(a, b) {
  if (typeof b === "number") {
    const n = asNumber(a);
    if (n === undefined) return undefined;
    return n < b ? -1 : n > b ? 1 : 0;
  }
  if (typeof a === "string" && typeof b === "string") {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return undefined;
}

function matches(row, { column, op, value }) {
  const actual = Object.prototype.hasOwnProperty.call(row, column) ? row[column] : null;
  if (op === "=" || op === "!=") {
    let equal;
    if (value === null || typeof value === "boolean") {
      equal = actual === value;
    } else {
      equal = compare(actual, value) === 0;
    }
    return op === "=" ? equal : !equal;
  }
  const order = compare(actual, value);
  if (order === undefined) return false;
  switch (op) {
    case "<":
      return order < 0;
    case "<=":
      return order <= 0;
    case ">":
      return order > 0;
    default:
      return order >= 0;
  }
}

/** Parses `select` into `[from, to]` pairs. */
function parseSelect(text) {
  const pairs = [];
  for (const item of text.split(",")) {
    const entry = item.trim();
    if (entry === "") continue;
    const [from, to, extra] = entry.split(":").map((part) => part.trim());
    if (!from || to === "" || extra !== undefined) {
      throw new Error(`select: ${JSON.stringify(entry)} is not COLUMN or COLUMN:NEW_NAME`);
    }
    pairs.push([from, to ?? from]);
  }
  if (pairs.length === 0) throw new Error("select: no column given");
  return pairs;
}

function reshape(row, pairs) {
  const out = {};
  for (const [from, to] of pairs) {
    out[to] = Object.prototype.hasOwnProperty.call(row, from) ? row[from] : null;
  }
  return out;
}

/** The configuration, parsed; throws an Error naming the key at fault. */
function settings() {
  const [where, reject, select] = [config("where"), config("reject"), config("select")];
  return {
    condition: where === undefined ? null : parseCondition("where", where),
    refusal: reject === undefined ? null : parseCondition("reject", reject),
    pairs: select === undefined ? null : parseSelect(select),
  };
}

/**
 * The text of a thrown value: an Error's message, then its stack (where it was thrown, in
 * app.js), which the host shows with the module and the batch.
 */
function errorText(err) {
  if (err instanceof Error) return err.stack ? `${err.message}\n${err.stack}` : err.message;
  return typeof err === "string" ? err : (JSON.stringify(err) ?? String(err));
}

// Each export answers in the contract's terms. componentize-js takes what an export throws as
// its `err` value as it is: a string for `init`, a `processor-error` variant for `transform`.
// A thrown Error would arrive as "expected a string, received [object]", its message lost;
// so every export catches and throws the contract's value instead.

export const lifecycle = {
  configKeys() {
    return [
      { name: "where", description: "keep rows where COLUMN OP VALUE holds (e.g. score >= 50)", required: false, secret: false },
      { name: "select", description: "columns to keep, in order; old:new renames (e.g. id,name:full_name)", required: false, secret: false },
      { name: "reject", description: "reject rows where COLUMN OP VALUE holds, as dead letters", required: false, secret: false },
    ];
  },
  init() {
    try {
      settings();
    } catch (err) {
      throw err instanceof Error ? err.message : errorText(err);
    }
  },
};

export const transformer = {
  transform(batch) {
    try {
      return filter(batch, settings());
    } catch (err) {
      throw { tag: "fatal", val: errorText(err) };
    }
  },
};

function filter(batch, { condition, refusal, pairs }) {
  const changes = JSON.parse(batch.rows);
  const kept = [];
  const rejections = [];
  changes.forEach((change, index) => {
    if (refusal && matches(change.row, refusal)) {
      rejections.push({ index, reason: `matches reject=${refusal.text}` });
      return;
    }
    if (condition && !matches(change.row, condition)) return;
    kept.push(pairs ? { op: change.op, row: reshape(change.row, pairs) } : change);
  });
  log(
    "debug",
    `batch ${batch.id}: kept ${kept.length} of ${changes.length} rows, rejected ${rejections.length}`,
  );
  return { rows: JSON.stringify(kept), rejections };
}
