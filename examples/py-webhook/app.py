"""A destination in Python: POSTs each batch to a webhook as JSON.

The request: ``POST <url>`` with body ``{"id": <batch id>, "pipeline": <name>, "rows": [...]}``
(``rows`` is the batch's rows array as the host gave it), headers ``Content-Type:
application/json``, ``Idempotency-Key: <batch id>`` (a batch delivered again carries the same
id) and, when the ``token`` secret is set, ``Authorization: Bearer <token>``.

Configuration: ``url`` (required, ``http://`` or ``https://``); ``token`` (optional, pass it
with ``--secret token=ENV_VAR``). The host must allow the URL's origin with ``--allow-host``.
The module declares both keys (the ``lifecycle`` export): the host refuses any other key, and a
run without ``url``, at start; ``init`` checks that ``url`` is an http(s) URL before any row
is read.

The answer decides what happens to the batch:

- 2xx: delivered. A JSON body ``{"rejected": [{"index": I, "reason": "..."}]}`` names rows
  the receiver did not take; the host keeps them as dead letters.
- 408, 429, 5xx, or no response (network error, timeout): retry later, after
  ``Retry-After`` when the receiver sent one.
- 3xx and any other 4xx: fatal; the pipeline stops with the status and the start of the body.

Built with componentize-py against ``wit/`` (world ``destination``,
``tidemark:processor@0.2.0``); see README.md.
"""

import email.utils
import json
import time
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, outgoing_handler
from wit_world.imports.tidemark_processor_types import (
    Batch,
    ConfigKey,
    ProcessorError_Fatal,
    ProcessorError_RetryLater,
    Rejection,
    Retry,
)
from wit_world.imports.wasi_http_types import (
    ErrorCode_HttpRequestDenied,
    Fields,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

# wasi:io streams take at most 4096 bytes per blocking write.
_CHUNK = 4096
# How much of a response body is read at most, and shown in an error message.
_MAX_BODY = 1 << 20
_SHOWN = 300


class _Fatal(Exception):
    pass


class _RetryLater(Exception):
    def __init__(self, message, after_ms=None):
        super().__init__(message)
        self.after_ms = after_ms


def _split_url(url):
    """``(scheme, authority, path_with_query)`` of an http(s) URL."""
    for prefix, scheme in (("https://", Scheme_Https()), ("http://", Scheme_Http())):
        if url.lower().startswith(prefix):
            rest = url[len(prefix):]
            end = min((at for at in (rest.find("/"), rest.find("?")) if at >= 0), default=len(rest))
            authority, path = rest[:end], rest[end:]
            if not path.startswith("/"):
                path = "/" + path
            if authority:
                return scheme, authority, path
    raise _Fatal(f"config url={url!r} is not an http:// or https:// URL")


def _describe(error_code):
    """A wasi:http error code as text: its name, with its payload when it has one."""
    name = type(error_code).__name__.replace("ErrorCode_", "")
    value = getattr(error_code, "value", None)
    return name if value is None else f"{name} ({value})"


def _failed(url, error_code):
    """The outcome of a request that got no response: fatal when the host refused it (its
    origin is not allowed, which only a change of flags fixes), else retry later."""
    if isinstance(error_code, ErrorCode_HttpRequestDenied):
        return _Fatal(f"the host refused the request to {url}: allow its origin with --allow-host")
    return _RetryLater(f"POST {url}: {_describe(error_code)}")


def _retry_after_ms(value):
    """``Retry-After`` (seconds, or an HTTP date) in milliseconds; None when unreadable."""
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return int(text) * 1000
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0, int((when.timestamp() - time.time()) * 1000))


def _header(headers, name):
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _read_body(response):
    """Up to ``_MAX_BODY`` bytes of the response's body."""
    data = bytearray()
    with response.consume() as body:
        with body.stream() as stream:
            while len(data) < _MAX_BODY:
                try:
                    data.extend(stream.blocking_read(65536))
                except Err:
                    # Closed: the whole body was read (or the connection broke, and what
                    # came is all there is).
                    break
    return bytes(data)


def _post(url, headers, body):
    """Sends the request; returns ``(status, headers, body)``."""
    scheme, authority, path = _split_url(url)
    try:
        fields = Fields.from_list(headers)
    except Err as err:
        raise _Fatal(f"a request header is not valid ({err.value}): check the token")
    request = OutgoingRequest(fields)
    request.set_method(Method_Post())
    request.set_scheme(scheme)
    request.set_authority(authority)
    request.set_path_with_query(path)
    outgoing = request.body()
    # The request goes out before its body is written, so a large body streams.
    try:
        pending = outgoing_handler.handle(request, None)
    except Err as err:
        raise _failed(url, err.value)
    # A failure to send the body often only means that the request itself failed (refused,
    # connection closed): the response future says why, so it is asked first.
    send_error = None
    try:
        # The stream must be dropped before the body is finished.
        with outgoing.write() as stream:
            for start in range(0, len(body), _CHUNK):
                stream.blocking_write_and_flush(body[start:start + _CHUNK])
    except Err as err:
        send_error = err.value
        # Dropped unfinished: the host abandons the request.
        outgoing.__exit__(None, None, None)
    else:
        try:
            OutgoingBody.finish(outgoing, None)
        except Err as err:
            send_error = _describe(err.value)
    pending.subscribe().block()
    answer = pending.get()
    if answer is None:
        raise _RetryLater(f"POST {url}: no response")
    # get() answers Err(None) when the response was already taken, Ok(Err(code)) when the
    # request failed.
    if isinstance(answer, Err):
        raise _RetryLater(f"POST {url}: response already taken")
    inner = answer.value
    if isinstance(inner, Err):
        raise _failed(url, inner.value)
    if send_error is not None:
        raise _RetryLater(f"POST {url}: sending the body failed: {send_error}")
    response = inner.value
    status = response.status()
    response_headers = response.headers().entries()
    return status, response_headers, _read_body(response)


def _rejections(body, rows):
    """The rejected rows a 2xx body lists (none when it lists none or is not JSON)."""
    if not body.strip():
        return []
    try:
        answer = json.loads(body)
    except ValueError:
        return []
    listed = answer.get("rejected") if isinstance(answer, dict) else None
    if not isinstance(listed, list) or not listed:
        return []
    count = len(json.loads(rows))
    out = []
    for item in listed:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise _Fatal(f"the webhook rejected a row that is not in the batch: {item!r}")
        reason = item.get("reason")
        out.append(Rejection(index=index, reason=str(reason) if reason is not None else "rejected"))
    return out


def _url():
    """The ``url`` configuration key, checked to be an http(s) URL."""
    url = host.config("url")
    if not url:
        raise _Fatal("config url is not set: pass --set url=https://…")
    _split_url(url)
    return url


def _deliver(batch):
    url = _url()
    token = host.config("token")
    body = (
        '{"id":' + json.dumps(batch.id)
        + ',"pipeline":' + json.dumps(batch.pipeline)
        + ',"rows":' + batch.rows + "}"
    ).encode("utf-8")
    headers = [
        ("content-type", b"application/json"),
        ("idempotency-key", batch.id.encode("utf-8")),
    ]
    if token:
        headers.append(("authorization", b"Bearer " + token.encode("utf-8")))
    status, response_headers, response_body = _post(url, headers, body)
    shown = response_body[:_SHOWN].decode("utf-8", "replace")
    if 200 <= status < 300:
        rejected = _rejections(response_body, batch.rows)
        host.log(
            host.Level.DEBUG,
            f"batch {batch.id}: HTTP {status}, {len(rejected)} rows rejected",
        )
        return rejected
    if status in (408, 429) or 500 <= status < 600:
        retry_after = _header(response_headers, "retry-after")
        after_ms = _retry_after_ms(retry_after) if retry_after is not None else None
        raise _RetryLater(f"POST {url}: HTTP {status}: {shown}", after_ms)
    raise _Fatal(f"POST {url}: HTTP {status}: {shown}")


class Lifecycle(exports.Lifecycle):
    def config_keys(self):
        return [
            ConfigKey(name="url", description="the webhook, http:// or https://", required=True, secret=False),
            ConfigKey(name="token", description="bearer token (--secret token=ENV_VAR)", required=False, secret=True),
        ]

    def init(self) -> None:
        try:
            _url()
        except _Fatal as err:
            raise Err(str(err))


class Deliverer(exports.Deliverer):
    def deliver(self, batch: Batch) -> list[Rejection]:
        try:
            return _deliver(batch)
        except _RetryLater as err:
            raise Err(ProcessorError_RetryLater(Retry(message=str(err), after_ms=err.after_ms)))
        except _Fatal as err:
            raise Err(ProcessorError_Fatal(str(err)))
        except Exception:
            # Anything else (a bug) would trap the component with no message: its traceback
            # reaches the host's error with the module and the batch.
            raise Err(ProcessorError_Fatal(traceback.format_exc()))
