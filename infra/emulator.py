"""Runs moto's server, made as strict as AWS where Shepherd relies on it.

1. DynamoDB writes are atomic. moto's threaded server checks a ConditionExpression and
   applies the write without a lock, so two concurrent conditional writes can both succeed:
   DynamoDB never allows that, and Shepherd's claim depends on it. The backend's mutating
   calls are serialised (found by `two_deliveries_racing_run_the_phase_once`). Creating SQS
   queues concurrently can fail inside moto with "dictionary changed size during
   iteration", so queue creation is serialised too.
   A transaction is checked whole, then applied, undoing only the items it touched if an
   operation fails: moto snapshots every table a transaction names with a deep copy (the
   state table, its stream history included, on every start: seconds per call once a few
   hundred productions exist) and restores the copy on failure, which also broke the
   table's stream for readers already past the failed write.

2. IAM is checked against resources, as AWS does. With IAM enforcement on, moto checks SQS
   and S3 requests against the queue's or object's ARN, but DynamoDB, DynamoDB Streams and
   SSM requests against "*": a policy naming a table or a parameter would be refused
   locally although AWS allows it, and a policy allowing every table would pass although
   the function should not touch them. These requests are checked here against the ARN
   AWS uses (table, table/index, stream, parameter). A transaction is checked per item
   against the action IAM knows it by (PutItem, UpdateItem, DeleteItem,
   ConditionCheckItem, GetItem): IAM has no TransactWriteItems action. Likewise SQS's
   batch calls are authorized by their single-message actions (SendMessageBatch by
   sqs:SendMessage, ...), which moto checked by the batch call's own name. SNS requests
   are checked against the topic they name (moto checked them against "*", so a policy
   allowing sns:Publish on one topic was refused).

Usage is moto_server's: python infra/emulator.py -H 127.0.0.1 -p 5005
"""
import functools
import hashlib
import hmac
import io
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlparse

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.iam.access_control import IAMRequest, IAMRequestBase, S3IAMRequest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.s3.exceptions import S3AccessDeniedError
from moto.server import main
from moto.sqs.models import SQSBackend
from moto.sqs.responses import SQSResponse
from moto.sns.responses import SNSResponse
from moto.ssm.responses import SimpleSystemManagerResponse

_LOCK = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _LOCK:
            return method(*args, **kwargs)

    return wrapper


from moto.dynamodb import models as _ddb_models  # noqa: E402


def _transact_write_items(self, transact_items):
    """TransactWriteItems as DynamoDB does it: all conditions first, then every write."""
    m = _ddb_models
    if len(transact_items) > 100:
        raise m.TooManyTransactionsException()
    targets, plan, errors = set(), [], []
    for item in transact_items:
        if len(item) > 1:
            raise m.TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            attrs = op["Item"]
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        unique = (op["TableName"], str(dict(sorted(key.items()))))
        if unique in targets:
            raise m.MultipleTransactionsException()
        targets.add(unique)
        current = self.get_item(op["TableName"], key)
        expression = op.get("ConditionExpression")
        failed = None
        if expression is not None:
            condition = m.get_filter_expression(
                expression,
                op.get("ExpressionAttributeNames"),
                op.get("ExpressionAttributeValues"),
            )
            if not condition.expr(current):
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                failed = ("ConditionalCheckFailed", "The conditional request failed", old)
        errors.append(failed or (None, None, None))
        plan.append((op_type, op, table, key, current))
    if any(code is not None for code, _, _ in errors):
        raise m.TransactionCanceledException(errors)
    streams = {
        t.name: (t, len(t.stream_shard.items))
        for _, _, t, _, _ in plan
        if getattr(t, "stream_shard", None) is not None
    }
    undo = []
    try:
        for op_type, op, table, key, current in plan:
            name = op["TableName"]
            undo.append((name, key, current.to_json()["Attributes"] if current else None))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(name, op["Item"], expression_attribute_names=names,
                              expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(name, key, expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(name, key, update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names,
                                 expression_attribute_values=values)
    except Exception:
        for name, key, old in reversed(undo):
            if old is None:
                self.delete_item(name, key)
            else:
                self.put_item(name, old)
        for table, length in streams.values():
            del table.stream_shard.items[length:]
        raise


DynamoDBBackend.transact_write_items = _transact_write_items

for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    if hasattr(DynamoDBBackend, _name):
        setattr(DynamoDBBackend, _name, _serialised(getattr(DynamoDBBackend, _name)))

for _name in ("create_queue", "set_queue_attributes"):
    if hasattr(SQSBackend, _name):
        setattr(SQSBackend, _name, _serialised(getattr(SQSBackend, _name)))


def _authorize(handler, checks):
    """What moto's mixin does, for several (action, resource) pairs of one request."""
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    path = handler.raw_path
    query = urlparse(handler.uri).query
    if query:
        path += "?" + query
    for action, resource in checks:
        request = IAMRequest(
            account_id=handler.current_account,
            method=handler.method,
            path=path,
            data=handler.data,
            body=handler.raw_body,
            headers=handler.headers,
            action=action,
        )
        request.check_signature()
        request.check_action_permitted(resource)


def _arn(handler, service, resource):
    return f"arn:aws:{service}:{handler.region}:{handler.current_account}:{resource}"


_TRANSACT_WRITE = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _dynamodb_checks(self, resource="*"):
    action = self._get_action()
    body = self.body if isinstance(self.body, dict) else {}
    table = lambda name: _arn(self, "dynamodb", f"table/{name}")  # noqa: E731
    if action == "TransactWriteItems":
        checks = [
            (_TRANSACT_WRITE[kind], table(op["TableName"]))
            for item in body.get("TransactItems", [])
            for kind, op in item.items()
        ]
    elif action == "TransactGetItems":
        checks = [
            ("GetItem", table(item["Get"]["TableName"]))
            for item in body.get("TransactItems", [])
        ]
    elif action in ("BatchWriteItem", "BatchGetItem"):
        checks = [(action, table(name)) for name in body.get("RequestItems", {})]
    elif "TableName" in body:
        arn = table(body["TableName"])
        if body.get("IndexName"):
            arn += f"/index/{body['IndexName']}"
        checks = [(action, arn)]
    else:
        checks = [(action, "*")]
    _authorize(self, checks or [(action, "*")])


def _ssm_checks(self, resource="*"):
    action = self._get_action()
    names = (
        [self._get_param("Name")]
        if self._get_param("Name")
        else list(self._get_param("Names") or [])
        or ([self._get_param("Path")] if self._get_param("Path") else [])
    )
    arn = lambda n: _arn(self, "ssm", "parameter/" + n.lstrip("/"))  # noqa: E731
    _authorize(self, [(action, arn(n)) for n in names] or [(action, "*")])


def _streams_checks(self, resource="*"):
    action = self._get_action()
    stream = self._get_param("StreamArn")
    _authorize(self, [(action, stream or "*")])


_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs_checks(self, resource="*"):
    action = self._get_action()
    _authorize(self, [(_SQS_BATCH.get(action, action), resource)])


def _sns_checks(self, resource="*"):
    action = self._get_action()
    topic = self._get_param("TopicArn") or self._get_param("TargetArn")
    _authorize(self, [(action, topic or "*")])


class _PresignedS3Request(S3IAMRequest):
    """An S3 request authenticated by SigV4 query parameters (a presigned URL)."""

    def __init__(self, account_id, method, path, data, body, headers, action):
        self._raw_query = urlparse(path).query
        pairs = [p.split("=", 1) + [""] for p in self._raw_query.split("&") if p]
        self._pairs = [(k, v) for k, v, *_ in pairs]
        q = {k: v for k, v in self._pairs}
        from urllib.parse import unquote

        headers = dict(headers)
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={unquote(q.get('X-Amz-Credential', ''))}, "
            f"SignedHeaders={unquote(q.get('X-Amz-SignedHeaders', 'host'))}, "
            f"Signature={q.get('X-Amz-Signature', '')}"
        )
        if "X-Amz-Security-Token" in q:
            headers["X-Amz-Security-Token"] = unquote(q["X-Amz-Security-Token"])
        self._q = {k: unquote(v) for k, v in q.items()}
        super().__init__(account_id, method, path, data, body, headers, action)

    def check_signature(self):
        q = self._q
        signed_at = datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=timezone.utc
        )
        if signed_at.timestamp() + int(q.get("X-Amz-Expires", "0")) < time.time():
            raise S3AccessDeniedError()  # AWS: "Request has expired"
        creds = self._access_key.create_credentials()
        canonical_query = "&".join(
            f"{k}={v}" for k, v in sorted(self._pairs) if k != "X-Amz-Signature"
        )
        signed = q.get("X-Amz-SignedHeaders", "host").split(";")
        lower = {k.lower(): v for k, v in self._headers.items()}
        canonical_headers = "".join(f"{h}:{lower.get(h, '').strip()}\n" for h in signed)
        canonical = "\n".join(
            [
                self._method,
                urlparse(self._path).path,
                canonical_query,
                canonical_headers,
                ";".join(signed),
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = "/".join(q["X-Amz-Credential"].split("/")[1:])
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                q["X-Amz-Date"],
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + creds.secret_key).encode()
        for part in scope.split("/"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, q.get("X-Amz-Signature", "")):
            self._raise_signature_does_not_match()


_dispatch = DomainDispatcherApplication.__call__


def _keep_form_body(self, environ, start_response):
    """Keeps the bytes of a form-encoded body for the signature check (3.)."""
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        _RAW.body = body
    else:
        _RAW.body = None
    return _dispatch(self, environ, start_response)


_RAW = threading.local()
DomainDispatcherApplication.__call__ = _keep_form_body
_create_aws_request = IAMRequestBase._create_aws_request


def _signed_request(self):
    request = _create_aws_request(self)
    raw = getattr(_RAW, "body", None)
    if raw and not self._body:
        request.data = raw
    return request


IAMRequestBase._create_aws_request = _signed_request

_s3_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action


def _s3_checks(self, bucket_name=None, key_name=None):
    query = urlparse(self.uri).query
    if "X-Amz-Credential=" not in query or "Authorization" in self.headers:
        return _s3_authorize(self, bucket_name, key_name)
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    arn = f"{bucket_name or '*'}/{key_name}" if key_name else (bucket_name or "*")
    request = _PresignedS3Request(
        account_id=self.current_account,
        method=self.method,
        path=self.raw_path + "?" + query,
        data=self.data,
        body=self.raw_body,
        headers=self.headers,
        action=self._get_action(),
    )
    request.check_signature()
    request.check_action_permitted(f"arn:aws:s3:::{arn}")


ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = _s3_checks
DynamoHandler._authenticate_and_authorize_normal_action = _dynamodb_checks
SQSResponse._authenticate_and_authorize_normal_action = _sqs_checks
SimpleSystemManagerResponse._authenticate_and_authorize_normal_action = _ssm_checks
DynamoDBStreamsHandler._authenticate_and_authorize_normal_action = _streams_checks
SNSResponse._authenticate_and_authorize_normal_action = _sns_checks

if __name__ == "__main__":
    main()
