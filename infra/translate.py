"""Translate template.yaml with SAM's own translator (offline) so cfn-lint sees plain
CloudFormation: `sam validate --lint` alone misses SAM-level mistakes."""
import json
import sys

from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicies(ManagedPolicyLoader):
    """The translator asks IAM for managed policy ARNs; our template uses none."""

    def __init__(self):
        pass

    def load(self):
        return {}


def main(src, dst):
    with open(src) as f:
        template = yaml_parse(f.read())
    # What `sam package` does: local code paths become S3 URIs.
    template.get("Globals", {}).get("Function", {})["CodeUri"] = "s3://bucket/code.zip"
    out = transform(template, {}, OfflinePolicies())
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
