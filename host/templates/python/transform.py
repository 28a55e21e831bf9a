"""{{name}}: a Tidemark transform in Python (contract ``tidemark:processor@{{version}}``). Each
batch of changed rows goes through ``Transformer.transform``; the rows it returns go on to the
next module, or to the host's output. It drops the rows of one plan, adds ``email_domain``, and
rejects rows whose email is no address.

Build with ``sh build.sh`` (componentize-py, world ``transform`` of ``wit/``), then:
``host test --module {{crate}}.wasm --input rows.json --expect expected.json``
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Batch,
    ConfigKey,
    ProcessorError_Fatal,
    Rejection,
    Transformed,
)


def _settings():
    """The configuration, checked: raises ValueError naming the key at fault."""
    # --set drop_plan=trial (a pipelines file: config = { drop_plan = "trial" }).
    drop_plan = host.config("drop_plan") or "free"
    if not drop_plan.strip():
        raise ValueError("drop_plan is empty: name a plan, or leave the key out")
    # A secret is read the same way, given as --secret salt=ENV_VAR; the host masks its value
    # in everything this module logs or returns.
    salt = host.config("salt")
    return drop_plan, salt


class Lifecycle(exports.Lifecycle):
    def config_keys(self):
        # The keys this module takes. The host refuses to start with any other key (a typo
        # such as --set drop_pan=trial) and without a required one, naming these; `host check`
        # lists them.
        return [
            ConfigKey(
                name="drop_plan",
                description="rows of this plan are left out (default free)",
                required=False,
                secret=False,
            ),
            ConfigKey(
                name="salt",
                description="an example secret, unused",
                required=False,
                secret=True,
            ),
        ]

    def init(self) -> None:
        # Called once at start, before any row is read: Err(message) stops the run there,
        # exit 2, with this message.
        try:
            _settings()
        except ValueError as err:
            raise Err(str(err))


class Transformer(exports.Transformer):
    def transform(self, batch: Batch) -> Transformed:
        try:
            return _transform(batch)
        except Exception:
            # An exception fails the whole batch, as ``fatal`` (retrying the same rows cannot
            # help), with its traceback, which the host shows with the module and the batch.
            # For a failure that passes (a dependency not ready), raise
            # Err(ProcessorError_RetryLater(Retry(message="...", after_ms=5000))) instead (both
            # from wit_world.imports.types): the host hands the same batch again later.
            raise Err(ProcessorError_Fatal(traceback.format_exc()))


def _transform(batch: Batch) -> Transformed:
    drop_plan, _salt = _settings()
    changes = json.loads(batch.rows)
    out = []
    rejections = []
    for index, change in enumerate(changes):
        row = change["row"]
        # An exception fails the whole batch, as ``fatal`` (see above).
        if "id" not in row:
            raise ValueError(f'batch {batch.id}: a row has no "id" column')
        # A transform passes a row on, changes it, or leaves it out...
        if row.get("plan") == drop_plan:
            continue
        email = row.get("email") if isinstance(row.get("email"), str) else None
        # ...or rejects it: the host keeps the row as a dead letter with this reason (`host
        # dead-letters`, `host retry` once fixed) and the rest of the batch goes on.
        if email is not None and "@" not in email and change["op"] != "delete":
            rejections.append(Rejection(index=index, reason="the email is not an address"))
            continue
        row["email_domain"] = email.split("@", 1)[1].lower() if email is not None else None
        out.append(change)
    # A line in the host's log, tagged with this module and the pipeline.
    host.log(
        host.Level.INFO,
        f"batch {batch.id}: passed on {len(out)} of {len(changes)} rows, rejected {len(rejections)}",
    )
    rows = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    return Transformed(rows=rows, rejections=rejections)
