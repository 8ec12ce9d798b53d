"""The template's roles against the permissions table (core/src/aws/permissions.json).

For each function of template.yaml, the IAM actions its role grants (managed policies it
attaches, under any condition, and its inline policies) must:
- include every action the table lists for that function (the calls check the same table
  before they are sent, so a call the tests make is one the role grants);
- be scoped: Resource "*" only for actions that support no resource-level permission
  (the EC2 Describe calls, Lambda's network interface calls for functions in a VPC);
- include nothing the table does not list, except read-only Describe calls, the function's
  own log writes, and KMS use that a condition limits to EC2 or Secrets Manager (they use the
  keys on the function's behalf).
And: a function that makes, attaches or starts with EBS volumes gets the EBS keys' policy, one
that reads secrets gets their keys' decrypt through Secrets Manager, and with VpcEndpoints=create
every service an in-VPC function calls has a VPC endpoint.
Run by `make validate` with the venv's Python (cfn-lint's YAML loader reads the short tags).
"""

import json
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
# Actions AWS documents as supporting no resource-level permissions, granted on "*".
UNSCOPABLE = {
    "ec2:DescribeInstances",
    "ec2:DescribeVolumes",
    "ec2:DescribeSnapshots",
    "ec2:DescribeImages",
    "ec2:DescribeReplaceRootVolumeTasks",
    # A job worker answers jobs it is handed: CodePipeline's job actions take no resource.
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    # Lambda's network interfaces for functions in a VPC (AWSLambdaVPCAccessExecutionRole).
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
# What the Lambda service itself does with the role, not the handler.
RUNTIME = {"logs:CreateLogStream", "logs:PutLogEvents"} | {
    a for a in UNSCOPABLE if "NetworkInterface" in a or "Subnets" in a or "PrivateIp" in a
}


def as_list(value):
    return value if isinstance(value, list) else [value]


def branches(value):
    """A value, or each branch of an Fn::If (AWS::NoValue dropped)."""
    if isinstance(value, dict) and "Fn::If" in value:
        out = []
        for branch in value["Fn::If"][1:]:
            out.extend(branches(branch))
        return out
    if isinstance(value, dict) and value.get("Ref") == "AWS::NoValue":
        return []
    return [value]


def statements(document):
    for s in as_list(document.get("Statement", [])):
        for st in branches(s):
            if st.get("Effect") == "Allow":
                yield st


def via_service(statement):
    """True when the statement lets a KMS key be used only through another service."""
    return "kms:ViaService" in json.dumps(statement.get("Condition", {}))


def grants(resources, role):
    """(action, resources, through a service) the role allows, from its managed and inline
    policies."""
    props = role["Properties"]
    docs = []
    for arn in as_list(props.get("ManagedPolicyArns", [])):
        for ref in branches(arn):
            name = ref.get("Ref") if isinstance(ref, dict) else None
            if name in resources:
                docs.append(resources[name]["Properties"]["PolicyDocument"])
    for policy in as_list(props.get("Policies", [])):
        docs.append(policy["PolicyDocument"])
    for doc in docs:
        for st in statements(doc):
            for action in as_list(st["Action"]):
                yield action, as_list(st.get("Resource", [])), via_service(st)


def managed_policies(role):
    """The names of the template's managed policies a role attaches, under any condition."""
    names = set()
    for arn in as_list(role["Properties"].get("ManagedPolicyArns", [])):
        for ref in branches(arn):
            if isinstance(ref, dict) and "Ref" in ref:
                names.add(ref["Ref"])
    return names


def functions_of(resources):
    """(function name, its resource, its role resource) for each function of the template."""
    for fn in resources.values():
        if fn["Type"] == "AWS::Serverless::Function":
            name = fn["Metadata"]["BuildProperties"]["Binary"].removeprefix("backstop-")
            yield name, fn, resources[fn["Properties"]["Role"]["Fn::GetAtt"][0]]


def kms_problems(resources, table):
    """A function that makes volumes from snapshots, attaches them or starts an instance with
    them needs the EBS keys (EbsKmsPolicy); one that reads secrets needs their keys, through
    Secrets Manager only (DatabaseSecretsPolicy's DecryptDatabaseSecrets)."""
    problems = []
    ebs = {"ec2:CreateVolume", "ec2:AttachVolume", "ec2:StartInstances"}
    for name, _, role in functions_of(resources):
        row = table.get(name, set())
        attached = managed_policies(role)
        if row & ebs and "EbsKmsPolicy" not in attached:
            problems.append(f"{name}: uses EBS volumes ({sorted(row & ebs)}) without EbsKmsPolicy")
        if "secretsmanager:GetSecretValue" in row and "DatabaseSecretsPolicy" not in attached:
            problems.append(f"{name}: reads secrets without DatabaseSecretsPolicy")
    document = resources["DatabaseSecretsPolicy"]["Properties"]["PolicyDocument"]
    decrypt = [st for st in statements(document) if "kms:Decrypt" in as_list(st["Action"])]
    if not decrypt or not all("secretsmanager." in json.dumps(st.get("Condition")) for st in decrypt):
        problems.append("DatabaseSecretsPolicy: no kms:Decrypt limited to Secrets Manager")
    return problems


# The VPC endpoint service of each IAM service prefix the in-VPC functions call.
ENDPOINT_SERVICE = {
    "s3": "s3",
    "ec2": "ec2",
    "secretsmanager": "secretsmanager",
    "cloudwatch": "monitoring",
    "events": "events",
    "states": "states",
}


def endpoint_problems(resources, table):
    """With VpcEndpoints=create, every service an in-VPC function calls has an endpoint."""
    wanted = set()
    for name, fn, _ in functions_of(resources):
        if "VpcConfig" in fn["Properties"]:
            wanted |= {a.split(":")[0] for a in table.get(name, set())}
    made = set()
    for r in resources.values():
        if r["Type"] == "AWS::EC2::VPCEndpoint" and r.get("Condition") == "CreateVpcEndpoints":
            name = r["Properties"]["ServiceName"]
            name = name.get("Fn::Sub", "") if isinstance(name, dict) else name
            made |= {p for p, e in ENDPOINT_SERVICE.items() if name.rsplit(".", 1)[-1] == e}
    return [f"the in-VPC functions call {service}, which VpcEndpoints=create gives no endpoint"
            for service in sorted(wanted - made)]


def main():
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    table = {
        k: set(v)
        for k, v in json.loads((ROOT / "core/src/aws/permissions.json").read_text()).items()
        if not k.startswith("_")
    }
    resources = template["Resources"]
    problems = []
    seen = set()
    for fn in resources.values():
        if fn["Type"] != "AWS::Serverless::Function":
            continue
        binary = fn["Metadata"]["BuildProperties"]["Binary"]
        name = binary.removeprefix("backstop-")
        seen.add(name)
        role_name = fn["Properties"]["Role"]["Fn::GetAtt"][0]
        granted = {}
        on_behalf = set()
        for action, res, through in grants(resources, resources[role_name]):
            granted.setdefault(action, []).extend(res)
            if through and action.startswith("kms:"):
                on_behalf.add(action)
        wanted = table.get(name)
        if wanted is None:
            problems.append(f"{name}: no row in permissions.json")
            continue
        for action in sorted(wanted - granted.keys()):
            problems.append(f"{name}: the code may call {action}, the role does not grant it")
        for action, res in sorted(granted.items()):
            if "*" in res and action not in UNSCOPABLE:
                problems.append(f"{name}: {action} is granted on Resource \"*\"")
            # KMS keys used by EC2 or Secrets Manager for the function, never called directly.
            extra = action not in wanted and action not in RUNTIME and action not in on_behalf
            if extra and not action.split(":")[1].startswith("Describe"):
                problems.append(f"{name}: the role grants {action}, which no call makes")
    for name in sorted(table.keys() - seen):
        problems.append(f"{name}: in permissions.json but not a function of the template")
    problems += kms_problems(resources, table)
    problems += endpoint_problems(resources, table)
    if problems:
        print("template roles against core/src/aws/permissions.json:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"IAM: {len(seen)} functions' roles grant exactly what their calls need")
    return 0


if __name__ == "__main__":
    sys.exit(main())
