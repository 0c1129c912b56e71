"""Creates the local stack's admin identity, before IAM enforcement is turned on; with
`--check`, verifies that enforcement is on (an unknown key is refused).

The emulator checks every request against IAM once enforcement is on (as AWS does). The
operators' tools (CLI, tests, provisioning) then act as this admin user; each function runs
with its own role from the template (the local runtime assumes it). Prints shell exports of
the admin's access key.
Usage: python infra/bootstrap.py http://127.0.0.1:5005 [--check]
"""
import sys

import boto3
import botocore.exceptions

ADMIN = "shepherd-admin"

if "--check" in sys.argv:
    stranger = boto3.client(
        "sqs",
        endpoint_url=sys.argv[1],
        region_name="us-east-1",
        aws_access_key_id="AKIANOBODYKNOWS00000",
        aws_secret_access_key="x",
    )
    try:
        stranger.list_queues()
    except botocore.exceptions.ClientError:
        sys.exit(0)
    sys.exit("IAM enforcement is off: an unknown access key was let through")

iam = boto3.client(
    "iam",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
)
iam.create_user(UserName=ADMIN)
iam.attach_user_policy(
    UserName=ADMIN, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
)
# The CLI takes its role from this tag (cli/src/identity.rs).
iam.tag_user(UserName=ADMIN, Tags=[{"Key": "shepherd-role", "Value": "admin"}])
key = iam.create_access_key(UserName=ADMIN)["AccessKey"]
print(
    f"export AWS_ACCESS_KEY_ID={key['AccessKeyId']} "
    f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']} "
    f"SHEPHERD_ADMIN_ARN=arn:aws:iam::123456789012:user/{ADMIN}"
)
