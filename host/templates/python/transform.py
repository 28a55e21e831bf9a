"""{{name}}: a Tidemark transform in Python. Each batch of changed rows goes through
``Transformer.transform``; the rows it returns go on to the next module, or to the host's
output. It drops the rows of one plan and adds ``email_domain``.

Build with ``sh build.sh`` (componentize-py, world ``transform`` of ``wit/``), then:
``host test --module {{crate}}.wasm --input rows.json --expect expected.json``
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Batch


class Transformer(exports.Transformer):
    def transform(self, batch: Batch) -> str:
        try:
            return _transform(batch)
        except Err:
            raise
        except Exception:
            # Any other exception would abort the component with no message in the host's
            # error; raised as Err, the traceback is shown with the module and the batch.
            raise Err(traceback.format_exc())


def _transform(batch: Batch) -> str:
    # Configuration: --set drop_plan=trial (a pipelines file: config = { drop_plan = "trial" }).
    drop_plan = host.config("drop_plan") or "free"
    # A secret is read the same way, given as --secret salt=ENV_VAR; the host masks its value
    # in everything this module logs or returns.
    _salt = host.config("salt")

    changes = json.loads(batch.rows)
    out = []
    for change in changes:
        row = change["row"]
        # Raising Err fails the whole batch: the host keeps its watermark, shows the message
        # with the module and the batch id, and tries the batch again later.
        if "id" not in row:
            raise Err(f'batch {batch.id}: a row has no "id" column')
        # A transform passes a row on, changes it, or leaves it out. (A destination can also
        # reject a row, which the host keeps as a dead letter.)
        if row.get("plan") == drop_plan:
            continue
        email = row.get("email")
        row["email_domain"] = email.split("@", 1)[1].lower() if isinstance(email, str) and "@" in email else None
        out.append(change)
    # A line in the host's log, tagged with this module and the pipeline.
    host.log(host.Level.INFO, f"batch {batch.id}: passed on {len(out)} of {len(changes)} rows")
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))
