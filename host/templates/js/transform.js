// {{name}}: a Tidemark transform in JavaScript. Each batch of changed rows goes through
// `transformer.transform`; the rows it returns go on to the next module, or to the host's
// output. It drops the rows of one plan and adds `email_domain`.
//
// Build with `npm install && npm run build` (componentize-js, world `transform` of `wit/`),
// then: host test --module {{crate}}.wasm --input rows.json --expect expected.json

import { config, log } from "tidemark:processor/host@{{version}}";

/**
 * The text of a thrown value. componentize-js turns what an export throws into its `err`
 * string and takes only a string: a thrown Error would arrive as "expected a string, received
 * [object]". So the export throws errorText(err): the message and the stack, which the host
 * shows with the module and the batch id.
 */
function errorText(err) {
  if (err instanceof Error) return err.stack ? `${err.message}\n${err.stack}` : err.message;
  return typeof err === "string" ? err : JSON.stringify(err) ?? String(err);
}

export const transformer = {
  transform(batch) {
    try {
      return transform(batch);
    } catch (err) {
      throw errorText(err);
    }
  },
};

function transform(batch) {
  // Configuration: --set drop_plan=trial (a pipelines file: config = { drop_plan = "trial" }).
  const dropPlan = config("drop_plan") ?? "free";
  // A secret is read the same way, given as --secret salt=ENV_VAR; the host masks its value in
  // everything this module logs or returns.
  const salt = config("salt");

  const changes = JSON.parse(batch.rows);
  const out = [];
  for (const change of changes) {
    const row = change.row;
    // Throwing fails the whole batch: the host keeps its watermark, shows the message with the
    // module and the batch id, and tries the batch again later.
    if (!("id" in row)) throw new Error(`batch ${batch.id}: a row has no "id" column`);
    // A transform passes a row on, changes it, or leaves it out. (A destination can also
    // reject a row, which the host keeps as a dead letter.)
    if (row.plan === dropPlan) continue;
    const at = typeof row.email === "string" ? row.email.indexOf("@") : -1;
    row.email_domain = at >= 0 ? row.email.slice(at + 1).toLowerCase() : null;
    out.push(change);
  }
  // A line in the host's log, tagged with this module and the pipeline.
  log("info", `batch ${batch.id}: passed on ${out.length} of ${changes.length} rows`);
  return JSON.stringify(out);
}
