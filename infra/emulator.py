"""Runs moto's server with DynamoDB writes made atomic.

moto's threaded server checks a ConditionExpression and applies the write without a lock,
so two concurrent conditional writes can both succeed: DynamoDB never allows that, and
Shepherd's claim depends on it. Serialising the backend's mutating calls restores the
guarantee (found by tests/delivery.rs `two_deliveries_racing_run_the_phase_once`).
Creating SQS queues concurrently (tests provision stacks in parallel) can fail inside moto
with "dictionary changed size during iteration" while it resolves redrive policies, so queue
creation is serialised too.
Usage is moto_server's: python infra/emulator.py -H 127.0.0.1 -p 5005
"""
import functools
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs.models import SQSBackend

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

if __name__ == "__main__":
    main()
