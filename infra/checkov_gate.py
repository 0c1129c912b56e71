"""Fails on any checkov finding, on a template checkov could not parse (which it reports
with exit status 0) and on a skip without a reason. Prints the counts for the record."""
import json
import sys

report = json.load(open(sys.argv[1]))
if isinstance(report, list):  # one entry per framework when several ran
    report = next(r for r in report if r.get("check_type") == "cloudformation")
summary = report["summary"]
results = report.get("results", {})
print(
    f"checkov {summary['checkov_version']}: {summary['resource_count']} resources, "
    f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped"
)
problems = []
if summary["parsing_errors"] or not summary["resource_count"]:
    problems.append("checkov could not parse template.yaml")
for f in results.get("failed_checks", []):
    problems.append(f"{f['check_id']} {f['resource']}: {f['check_name']}")
for f in results.get("skipped_checks", []):
    if not (f.get("check_result", {}).get("suppress_comment") or "").strip():
        problems.append(f"{f['check_id']} {f['resource']}: skipped without a reason")
if problems:
    print("\n".join(problems), file=sys.stderr)
    print("fix each finding, or skip it inline (Metadata: checkov: skip:) with its reason", file=sys.stderr)
    sys.exit(1)
