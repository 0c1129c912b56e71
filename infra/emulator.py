"""Runs moto's server, made as strict as AWS where Shepherd relies on it.

1. DynamoDB writes are atomic. moto's threaded server checks a ConditionExpression and
   applies the write without a lock, so two concurrent conditional writes can both succeed:
   DynamoDB never allows that, and Shepherd's claim depends on it. The backend's mutating
   calls are serialised (found by `two_deliveries_racing_run_the_phase_once`). Creating SQS
   queues concurrently can fail inside moto with "dictionary changed size during
   iteration", so queue creation is serialised too.

2. IAM is checked against resources, as AWS does. With IAM enforcement on, moto checks SQS
   and S3 requests against the queue's or object's ARN, but DynamoDB, DynamoDB Streams and
   SSM requests against "*": a policy naming a table or a parameter would be refused
   locally although AWS allows it, and a policy allowing every table would pass although
   the function should not touch them. These requests are checked here against the ARN
   AWS uses (table, table/index, stream, parameter). A transaction is checked per item
   against the action IAM knows it by (PutItem, UpdateItem, DeleteItem,
   ConditionCheckItem, GetItem): IAM has no TransactWriteItems action. Likewise SQS's
   batch calls are authorized by their single-message actions (SendMessageBatch by
   sqs:SendMessage, ...), which moto checked by the batch call's own name.

Usage is moto_server's: python infra/emulator.py -H 127.0.0.1 -p 5005
"""
import functools
import threading
from urllib.parse import urlparse

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.iam.access_control import IAMRequest
from moto.server import main
from moto.sqs.models import SQSBackend
from moto.sqs.responses import SQSResponse
from moto.ssm.responses import SimpleSystemManagerResponse

_LOCK = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _LOCK:
            return method(*args, **kwargs)

    return wrapper


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


DynamoHandler._authenticate_and_authorize_normal_action = _dynamodb_checks
SQSResponse._authenticate_and_authorize_normal_action = _sqs_checks
SimpleSystemManagerResponse._authenticate_and_authorize_normal_action = _ssm_checks
DynamoDBStreamsHandler._authenticate_and_authorize_normal_action = _streams_checks

if __name__ == "__main__":
    main()
