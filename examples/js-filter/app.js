// Keeps the rows that match a condition and reshapes them.
//
// Configuration (`--set key=value`), both optional:
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
//
// Built with componentize-js against `wit/` (world `transform`); see README.md.

import { config, log } from "tidemark:processor/host@0.1.0";

const OPERATORS = ["<=", ">=", "!=", "=", "<", ">"];

/** Parses `where` into `{column, op, value}`; throws a message naming the problem. */
function parseCondition(text) {
  const match = /^\s*([A-Za-z_][A-Za-z0-9_$]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$/.exec(text);
  if (!match) {
    throw `where=${JSON.stringify(text)} is not a condition: write COLUMN OP VALUE, OP one of ${OPERATORS.join(" ")}`;
  }
  const [, column, op, raw] = match;
  return { column, op: op === "==" ? "=" : op, value: parseValue(raw) };
}

function parseValue(raw) {
  if (raw === "null") return null;
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"')) {
    try {
      return JSON.parse(raw);
    } catch {
      throw `where: ${raw} is not a valid quoted string`;
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
      throw `select: ${JSON.stringify(entry)} is not COLUMN or COLUMN:NEW_NAME`;
    }
    pairs.push([from, to ?? from]);
  }
  if (pairs.length === 0) throw "select: no column given";
  return pairs;
}

function reshape(row, pairs) {
  const out = {};
  for (const [from, to] of pairs) {
    out[to] = Object.prototype.hasOwnProperty.call(row, from) ? row[from] : null;
  }
  return out;
}

/**
 * The text of a thrown value. componentize-js turns what an export throws into its `err`
 * string, and takes only a string: an `Error` would arrive as "expected a string, received
 * [object]", its message lost. So every export throws `errorText(err)`: the message, then the
 * stack, which the host shows with the module and the batch.
 */
function errorText(err) {
  if (err instanceof Error) return err.stack ? `${err.message}\n${err.stack}` : err.message;
  return typeof err === "string" ? err : JSON.stringify(err) ?? String(err);
}

export const transformer = {
  transform(batch) {
    try {
      return filter(batch);
    } catch (err) {
      throw errorText(err);
    }
  },
};

function filter(batch) {
  const where = config("where");
  const select = config("select");
  const condition = where === undefined ? null : parseCondition(where);
  const pairs = select === undefined ? null : parseSelect(select);
  let changes;
  try {
    changes = JSON.parse(batch.rows);
  } catch (err) {
    throw `batch ${batch.id}: rows are not JSON: ${err}`;
  }
  const kept = [];
  for (const change of changes) {
    if (condition && !matches(change.row, condition)) continue;
    kept.push(pairs ? { op: change.op, row: reshape(change.row, pairs) } : change);
  }
  log("debug", `batch ${batch.id}: kept ${kept.length} of ${changes.length} rows`);
  return JSON.stringify(kept);
}
