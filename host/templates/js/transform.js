// {{name}}: a Tidemark transform in JavaScript (contract tidemark:processor@{{version}}). Each
// batch of changed rows goes through `transformer.transform`; the rows it returns go on to the
// next module, or to the host's output. It drops the rows of one plan, adds `email_domain`, and
// rejects rows whose email is no address.
//
// Build with `npm install && npm run build` (componentize-js, world `transform` of `wit/`),
// then: host test --module {{crate}}.wasm --input rows.json --expect expected.json

import { config, log } from "tidemark:processor/host@{{version}}";

// The configuration keys this module takes. The host refuses to start with any other key (a
// typo such as --set drop_pan=trial) and without a required one, naming these; `host check`
// lists them.
const CONFIG_KEYS = [
  { name: "drop_plan", description: "rows of this plan are left out (default free)", required: false, secret: false },
  // A secret is given as --secret salt=ENV_VAR; the host masks its value in everything this
  // module logs or returns.
  { name: "salt", description: "an example secret, unused", required: false, secret: true },
];

/** The configuration, checked: throws an Error naming the key at fault. */
function settings() {
  // --set drop_plan=trial (a pipelines file: config = { drop_plan = "trial" }).
  const dropPlan = config("drop_plan") ?? "free";
  if (dropPlan.trim() === "") throw new Error("drop_plan is empty: name a plan, or leave the key out");
  return { dropPlan, salt: config("salt") };
}

export const lifecycle = {
  configKeys() {
    return CONFIG_KEYS;
  },
  // Called once at start, before any row is read: an error (a string) stops the run there,
  // exit 2, with this message.
  init() {
    try {
      settings();
    } catch (err) {
      throw err.message;
    }
  },
};

export const transformer = {
  transform(batch) {
    try {
      return transform(batch, settings());
    } catch (err) {
      // An exception fails the whole batch. componentize-js passes on what is thrown here as
      // the contract's `processor-error`: `fatal` (retrying the same rows cannot help) with
      // the message and the stack, which the host shows with the module and the batch. For a
      // failure that passes (a dependency not ready), throw
      // { tag: "retry-later", val: { message: "...", afterMs: 5000 } } instead: the host
      // hands the same batch again later.
      throw { tag: "fatal", val: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) };
    }
  },
};

function transform(batch, { dropPlan }) {
  const changes = JSON.parse(batch.rows);
  const out = [];
  const rejections = [];
  changes.forEach((change, index) => {
    const row = change.row;
    // A thrown Error fails the whole batch, as `fatal` (see above).
    if (!("id" in row)) throw new Error(`batch ${batch.id}: a row has no "id" column`);
    // A transform passes a row on, changes it, or leaves it out...
    if (row.plan === dropPlan) return;
    const email = typeof row.email === "string" ? row.email : null;
    // ...or rejects it: the host keeps the row as a dead letter with this reason (`host
    // dead-letters`, `host retry` once fixed) and the rest of the batch goes on.
    if (email !== null && !email.includes("@") && change.op !== "delete") {
      rejections.push({ index, reason: "the email is not an address" });
      return;
    }
    row.email_domain = email === null ? null : email.slice(email.indexOf("@") + 1).toLowerCase();
    out.push(change);
  });
  // A line in the host's log, tagged with this module and the pipeline.
  log("info", `batch ${batch.id}: passed on ${out.length} of ${changes.length} rows, rejected ${rejections.length}`);
  return { rows: JSON.stringify(out), rejections };
}
