#!/usr/bin/env python3
"""Checks of terraform/aws applied against moto_server (tools/iac/emulator.sh).

The checks ask the emulator through the AWS APIs, with boto3 (which moto
depends on, so it is there wherever moto_server is), the way an operator
would ask AWS; none of them reads moto's internals.

  emulator.py free-port
  emulator.py wait URL SECONDS
  emulator.py outputs ENDPOINT REGION OUTPUTS_JSON STATE_JSON
  emulator.py plan-changes PLAN_JSON
  emulator.py leftovers ENDPOINT REGION CLUSTER

Each check prints what it found and exits 1 on a failure.
"""

import json
import re
import socket
import sys
import time
import urllib.error
import urllib.request


def client(service, endpoint, region):
    import boto3  # only the checks that ask the emulator need it

    # Fake credentials: the emulator accepts any.
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    )


def free_port():
    """A TCP port free on the loopback address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait(url, seconds):
    """Waits until url answers 200, for at most seconds."""
    deadline = time.monotonic() + float(seconds)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            print(f"{url} did not answer within {seconds}s", file=sys.stderr)
            return 1
        time.sleep(0.2)


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        print(("ok:   " if ok else "FAIL: ") + what)
        if not ok:
            self.failed += 1


def resources(state, type_):
    """The instances of type_ in a `terraform show -json` state, by address."""
    out = {}

    def walk(module):
        for r in module.get("resources", []):
            if r["type"] == type_ and r["mode"] == "managed":
                out[r["address"]] = r["values"]
        for child in module.get("child_modules", []):
            walk(child)

    walk(state["values"]["root_module"])
    return out


def outputs(endpoint, region, outputs_file, state_file):
    """The outputs an operator uses, against what the emulator holds."""
    with open(outputs_file) as f:
        out = {k: v["value"] for k, v in json.load(f).items()}
    with open(state_file) as f:
        state = json.load(f)
    c = Checks()

    # api_url: HTTPS on the load balancer's own name (no domain_name here).
    lbs = client("elbv2", endpoint, region).describe_load_balancers()["LoadBalancers"]
    c.check(len(lbs) == 1, f"one load balancer in the emulator ({len(lbs)})")
    if lbs:
        want = "https://" + lbs[0]["DNSName"]
        c.check(out["api_url"] == want, f"api_url {out['api_url']} is {want}")

    # submit_vars: the jobs' variables for this cluster, one gateway per
    # gateway node the emulator runs.
    ec2 = client("ec2", endpoint, region)
    running = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    role = lambda i: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Role")
    gateways = sum(1 for i in running if role(i) == "gateway")
    sv = out["submit_vars"]
    for pattern, what in [
        (r'(?m)^driver\s*=\s*"exec"$', 'driver = "exec"'),
        (r'(?m)^datacenters\s*=\s*\["dc1"\]$', 'datacenters = ["dc1"]'),
        (rf"(?m)^gateway_count\s*=\s*{gateways}$", f"gateway_count = {gateways} (gateway nodes in the emulator)"),
    ]:
        c.check(re.search(pattern, sv) is not None, f"submit_vars sets {what}")

    # The SSM parameters: every one the state holds is in the emulator as a
    # SecureString under the cluster's KMS key, nothing else is under the
    # cluster's prefix, and the names the outputs' commands read exist and
    # hold what Terraform generated.
    ssm = client("ssm", endpoint, region)
    params = {p["name"]: p for p in resources(state, "aws_ssm_parameter").values()}
    prefix = "/slm-mesh/" + state_cluster(state) + "/"
    held = {}
    for page in ssm.get_paginator("describe_parameters").paginate():
        for p in page["Parameters"]:
            if p["Name"].startswith(prefix):
                held[p["Name"]] = p
    c.check(len(params) > 0 and set(held) == set(params), f"SSM holds exactly the {len(params)} parameters of the state under {prefix}")
    key_arn = resources(state, "aws_kms_key")["aws_kms_key.cluster"]["arn"]
    bad = [n for n, p in held.items() if p.get("Type") != "SecureString" or p.get("KeyId") not in (key_arn, key_arn.split("/")[-1])]
    c.check(not bad, f"every parameter is a SecureString under the cluster's KMS key {bad or ''}")
    names = re.findall(r"--name ([^\s)]+)", out["api_key_command"] + " " + " ".join(out["token_commands"].values()))
    c.check(len(names) == 3, f"api_key_command and token_commands name three parameters: {names}")
    for n in names:
        try:
            v = ssm.get_parameter(Name=n, WithDecryption=True)["Parameter"]["Value"]
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            c.check(False, f"{n} readable: {e}")
            continue
        c.check(n in params and v == params[n]["value"], f"{n} holds the value Terraform generated")

    # What moto reports wrongly about instances (see emulator.sh) is checked
    # here instead: no node has a public address, and each carries exactly
    # the security groups the module gives its role.
    expected = out["emulator_security_groups"]
    c.check(len(running) == out["emulator_node_count"], f"{out['emulator_node_count']} nodes running ({len(running)})")
    for i in running:
        name = {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Name", i["InstanceId"])
        key = name.removeprefix(state_cluster(state) + "-")
        nic = next(n for n in i["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
        public = i.get("PublicIpAddress") or nic.get("Association", {}).get("PublicIp")
        c.check(not public, f"{name}: no public address")
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        c.check(tags.get("Cluster") == state_cluster(state) and tags.get("Role") in ("server", "gateway", "caller", "inference"), f"{name}: tagged with its cluster and role")
        groups = sorted(g["GroupId"] for g in nic["Groups"])
        c.check(groups == sorted(expected.get(key, [])), f"{name}: security groups {groups}")

    # The client groups as the emulator holds them: as many instances as
    # desired, the health check of their role, the termination hook the
    # nodes' drain.sh completes, the gateways registered in the target group.
    asg = client("autoscaling", endpoint, region)
    groups = {g["AutoScalingGroupName"]: g for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}
    target_group = resources(state, "aws_lb_target_group")["aws_lb_target_group.gateway"]["arn"]
    for tier, name in sorted(out["autoscaling_groups"].items()):
        g = groups.get(name)
        c.check(g is not None, f"Auto Scaling group {name}")
        if g is None:
            continue
        c.check(len(g["Instances"]) == g["DesiredCapacity"] > 0, f"{name}: {len(g['Instances'])} of {g['DesiredCapacity']} instances")
        c.check(g["HealthCheckType"] == ("ELB" if tier == "gateway" else "EC2"), f"{name}: health check {g['HealthCheckType']}")
        c.check(g.get("TargetGroupARNs", []) == ([target_group] if tier == "gateway" else []), f"{name}: target groups {g.get('TargetGroupARNs')}")
        hooks = [
            (h["LifecycleHookName"], h["LifecycleTransition"], h["DefaultResult"])
            for h in asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
        ]
        c.check(hooks == [("slm-drain", "autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE")], f"{name}: lifecycle hooks {hooks}")
    own_group = next(iter(groups.values()), {}).get("AutoScalingGroupARN", "")
    other_group = re.sub(r"autoScalingGroupName/.*", "autoScalingGroupName/another-group", own_group)
    drain_param = params[prefix + "client/nomad/drain-token"]["arn"]

    # What each node role may do, as the emulator holds its policies: every
    # inline and every attached managed policy together, evaluated as IAM
    # does for the requests that matter (an explicit deny wins, then any
    # allow). Clients must not read or decrypt the server secrets, servers
    # must; both must read their own.
    iam = client("iam", endpoint, region)
    server_param = params[prefix + "server/nomad/management-token"]["arn"]
    client_param = params[prefix + "client/consul/agent-token"]["arn"]
    # SSM decrypts a SecureString for the caller, naming the parameter.
    via_ssm = lambda param: {"kms:ViaService": f"ssm.{region}.amazonaws.com", "kms:EncryptionContext:PARAMETER_ARN": param}
    for name, r in resources(state, "aws_iam_role").items():
        if not name.startswith("aws_iam_role.node["):
            continue
        kind = "server" if '"server"' in name else "client"
        statements = role_statements(iam, r["name"])
        reads_server = allowed(statements, "ssm:GetParameter", server_param)
        decrypts_server = allowed(statements, "kms:Decrypt", key_arn, via_ssm(server_param))
        reads_own = allowed(statements, "ssm:GetParameter", client_param) and allowed(statements, "kms:Decrypt", key_arn, via_ssm(client_param))
        attached = [a["PolicyName"] for a in iam.list_attached_role_policies(RoleName=r["name"])["AttachedPolicies"]]
        c.check(reads_own, f"{kind} role ({len(statements)} statements; managed policies {attached}) reads and decrypts client/*")
        completes_own = allowed(statements, "autoscaling:CompleteLifecycleAction", own_group)
        completes_other = allowed(statements, "autoscaling:CompleteLifecycleAction", other_group)
        publishes = allowed(statements, "ssm:PutParameter", drain_param)
        if kind == "server":
            c.check(reads_server and decrypts_server, "server role reads and decrypts server/*")
            c.check(publishes, "server role writes the drain token's parameter")
            c.check(not completes_own, "server role cannot complete a client group's lifecycle action")
        else:
            c.check(not reads_server, f"client role cannot ssm:GetParameter {server_param}")
            c.check(not decrypts_server, "client role cannot kms:Decrypt a server/* parameter")
            c.check(completes_own and not completes_other, f"client role completes lifecycle actions of {own_group} and not of another group")
            c.check(not publishes, "client role cannot write the drain token's parameter")

    # One server in each zone, as the emulator placed them.
    zones = sorted(i["Placement"]["AvailabilityZone"] for i in running if role(i) == "server")
    c.check(len(zones) >= 3 and len(set(zones)) == len(zones), f"one server per zone: {zones}")
    return 1 if c.failed else 0


def role_statements(iam, role):
    """Every statement of the role's inline and attached managed policies."""
    docs = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        docs.append(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    for a in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=a["PolicyArn"])["Policy"]["DefaultVersionId"]
        docs.append(iam.get_policy_version(PolicyArn=a["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"])
    out = []
    for d in docs:
        if isinstance(d, str):
            d = json.loads(d)
        st = d["Statement"]
        out.extend(st if isinstance(st, list) else [st])
    return out


def allowed(statements, action, resource, context=None):
    """IAM's decision for one request within one account: an explicit deny
    wins, then an allow, else the implicit deny. Understands the action and
    resource patterns (*, ?) and the condition operators the module uses
    (StringEquals, StringLike; a key absent from context does not match)."""
    import fnmatch

    def listed(v):
        return v if isinstance(v, list) else [v]

    def matches(st):
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(st.get("Action", []))):
            return False
        if not any(fnmatch.fnmatchcase(resource, r) for r in listed(st.get("Resource", []))):
            return False
        for op, conds in st.get("Condition", {}).items():
            for key, values in conds.items():
                have = (context or {}).get(key)
                if have is None:
                    return False
                if op == "StringEquals" and have not in listed(values):
                    return False
                if op == "StringLike" and not any(fnmatch.fnmatchcase(have, v) for v in listed(values)):
                    return False
                if op not in ("StringEquals", "StringLike"):
                    return False
        return True

    hits = [st for st in statements if matches(st)]
    if any(st.get("Effect") == "Deny" for st in hits):
        return False
    return any(st.get("Effect") == "Allow" for st in hits)


def state_cluster(state):
    vpc = next(iter(resources(state, "aws_vpc").values()))
    return vpc["tags"]["Name"]


def plan_changes(plan_file):
    """Fails on any change in a saved plan other than no-op and read."""
    with open(plan_file) as f:
        plan = json.load(f)
    changes = [
        (rc["address"], rc["change"]["actions"])
        for rc in plan.get("resource_changes", [])
        if rc["change"]["actions"] not in (["no-op"], ["read"])
    ]
    outs = [k for k, v in plan.get("output_changes", {}).items() if v["actions"] != ["no-op"]]
    for addr, actions in changes:
        print(f"FAIL: {addr}: {'/'.join(actions)}")
    for k in outs:
        print(f"FAIL: output {k} changes")
    n = len(plan.get("resource_changes", []))
    if changes or outs:
        print(f"the second plan changes {len(changes)} of {n} resources and {len(outs)} outputs")
        return 1
    print(f"ok:   the second plan changes none of {n} resources and no output")
    return 0


def leftovers(endpoint, region, cluster):
    """Lists what the emulator still holds of the module after destroy."""
    ec2 = client("ec2", endpoint, region)
    default_vpcs = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault")}
    outside_default = lambda items: [x for x in items if x.get("VpcId") not in default_vpcs]
    kms = client("kms", endpoint, region)
    keys = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] for k in kms.list_keys()["Keys"]]
    iam = client("iam", endpoint, region)
    s3 = client("s3", endpoint, region)
    autoscaling = client("autoscaling", endpoint, region)
    found = {
        "EC2 VPCs": [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")],
        "EC2 subnets": [s["SubnetId"] for s in outside_default(ec2.describe_subnets()["Subnets"])],
        "EC2 security groups": [g["GroupId"] for g in outside_default(ec2.describe_security_groups()["SecurityGroups"])],
        "EC2 route tables": [t["RouteTableId"] for t in outside_default(ec2.describe_route_tables()["RouteTables"])],
        "EC2 internet gateways": [
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways()["InternetGateways"]
            if not any(a["VpcId"] in default_vpcs for a in g.get("Attachments", []))
        ],
        "EC2 NAT gateways": [
            g["NatGatewayId"] for g in ec2.describe_nat_gateways()["NatGateways"] if g["State"] not in ("deleted", "deleting")
        ],
        "EC2 elastic IPs": [a.get("AllocationId") for a in ec2.describe_addresses()["Addresses"]],
        "EC2 VPC endpoints": [
            e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"] if e["State"].lower() != "deleted"
        ],
        "EC2 flow logs": [f["FlowLogId"] for f in ec2.describe_flow_logs()["FlowLogs"]],
        "EC2 instances": [
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ],
        "EBS volumes": [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]],
        "EC2 launch templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]],
        "Auto Scaling groups": [
            g["AutoScalingGroupName"] for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        ],
        "Auto Scaling lifecycle hooks": [
            h["LifecycleHookName"]
            for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
            for h in autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=g["AutoScalingGroupName"])["LifecycleHooks"]
        ],
        "ELB load balancers": [
            lb["LoadBalancerName"] for lb in client("elbv2", endpoint, region).describe_load_balancers()["LoadBalancers"]
        ],
        "ELB target groups": [
            g["TargetGroupName"] for g in client("elbv2", endpoint, region).describe_target_groups()["TargetGroups"]
        ],
        "ACM certificates": [
            c["CertificateArn"] for c in client("acm", endpoint, region).list_certificates()["CertificateSummaryList"]
        ],
        "KMS keys (not pending deletion)": [
            k["KeyId"] for k in keys if k.get("KeyManager") == "CUSTOMER" and k["KeyState"] != "PendingDeletion"
        ],
        "KMS aliases": [a["AliasName"] for a in kms.list_aliases()["Aliases"] if not a["AliasName"].startswith("alias/aws/")],
        "S3 buckets": [b["Name"] for b in s3.list_buckets().get("Buckets", [])],
        "SSM parameters": [
            p["Name"] for page in client("ssm", endpoint, region).get_paginator("describe_parameters").paginate() for p in page["Parameters"]
        ],
        "IAM roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if not r["Path"].startswith("/aws-service-role/")],
        "IAM instance profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]],
        "IAM customer-managed policies": [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]],
        "CloudWatch log groups": [
            g["logGroupName"] for g in client("logs", endpoint, region).describe_log_groups()["logGroups"]
        ],
        "CloudWatch alarms": [a["AlarmName"] for a in client("cloudwatch", endpoint, region).describe_alarms()["MetricAlarms"]],
        "SNS topics": [t["TopicArn"] for t in client("sns", endpoint, region).list_topics()["Topics"]],
        "resources tagged Cluster=" + cluster: [
            r["ResourceARN"]
            for r in client("resourcegroupstaggingapi", endpoint, region).get_resources(
                TagFilters=[{"Key": "Cluster", "Values": [cluster]}]
            )["ResourceTagMappingList"]
        ],
    }
    # As on AWS, what was deleted stays listed for a while: terminated
    # instances, deleted NAT gateways, keys pending deletion. The tagging API
    # lists them too; they are gone, not left over.
    pending = [k["KeyId"] for k in keys if k.get("KeyManager") == "CUSTOMER" and k["KeyState"] == "PendingDeletion"]
    gone = set(pending)
    gone.update(
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "terminated"
    )
    gone.update(g["NatGatewayId"] for g in ec2.describe_nat_gateways()["NatGateways"] if g["State"] in ("deleted", "deleting"))
    # Moto 5.2 gives an instance launched from a launch template the AMI's
    # root volume and, at the same device, the template's own: terminating
    # the instance deletes the template's (delete_on_termination) and leaves
    # the other attached to the terminated instance. On AWS the template's
    # mapping replaces the AMI's, and no volume stays attached to a
    # terminated instance: these are moto's doubles, not left over.
    terminated = {
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "terminated"
    }
    doubles = [
        v["VolumeId"]
        for v in ec2.describe_volumes()["Volumes"]
        if v["Attachments"] and all(a["InstanceId"] in terminated for a in v["Attachments"])
    ]
    found["EBS volumes"] = [v for v in found["EBS volumes"] if v not in doubles]
    gone.update(doubles)
    tagged = "resources tagged Cluster=" + cluster
    found[tagged] = [arn for arn in found[tagged] if arn.rsplit("/", 1)[-1] not in gone]
    remaining = {k: v for k, v in found.items() if v}
    print(f"the emulator after destroy ({len(found)} kinds of resource asked for):")
    for kind, ids in found.items():
        print(f"  {kind}: {len(ids)}" + (f" {ids}" if ids else ""))
    print(f"  deleted and still listed, as AWS lists them for a while (terminated instances, deleted NAT gateways, KMS keys pending deletion): {len(gone) - len(doubles)}")
    print(f"  moto's second root volumes of terminated instances launched from a launch template (see above): {len(doubles)}")
    if remaining:
        print("FAIL: destroy left resources of the module in the emulator")
        return 1
    print("ok:   destroy left nothing of the module")
    return 0


def main(argv):
    commands = {
        "free-port": (free_port, 0),
        "wait": (wait, 2),
        "outputs": (outputs, 4),
        "plan-changes": (plan_changes, 1),
        "leftovers": (leftovers, 3),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = commands[argv[1]]
    return fn(*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
