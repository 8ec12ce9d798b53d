#!/usr/bin/env python3
"""Backstop's deployed stack, run for real on the local AWS emulator ministack.

    make test-deployed        (a pinned venv, .venv-deployed, from tests/deployed/requirements.txt)

What it does, end to end, with nothing outside this machine:

1. Starts ministack (with aws-sam-translator, so it applies the SAM transform) on 127.0.0.1 at a
   free port, in a clean environment (the Lambda functions ministack runs inherit its whole
   process environment), enforcing IAM (AUTH=true): every function's role must grant what
   the function does.
2. Starts a throwaway PostgreSQL (Debian's binaries) with a non-superuser role owning `shop`.
3. Packages template.yaml for the emulator (x86_64, each function's debug binary as its
   `bootstrap`, no cargo-lambda build metadata, no layers) and deploys it with
   `aws cloudformation package` / `aws cloudformation deploy` until CREATE_COMPLETE.
4. Gives the functions what they need to run natively (PG_BIN_DIR, the database URL variable
   the run document names) with `aws lambda update-function-configuration`.
5. Runs two database-only protected deploys through the deployed state machine, with a bash
   stand-in deploy function: one that passes (SUCCEEDED) and one that breaks the data
   (FAILED with DeployFailed, the data restored), and reads the manifests and the incident
   report back from the stack's bucket.
6. Measures each function's cold init (process start to its first Runtime API `next`) against
   a stub Runtime API: the median of 5 runs.

Every process it starts listens on 127.0.0.1 only and is stopped by its PID at the end, on
failure too. It exits non-zero when anything is not as expected.

Where ministack 1.5.33 falls short, this run's copies are changed as narrowly as possible,
each change printed when applied:
- `$$.Execution.Name` in a Task state's ResultSelector is left unresolved: not patched here,
  the ASL itself names the backup in a Pass state (NameBackup), which every engine resolves.
- `patch_conditions`: Fn::Join in a condition is not evaluated (the condition is always true).
- `log_format_env`: a function's LoggingConfig sets no AWS_LAMBDA_LOG_FORMAT/LOG_LEVEL.
- `drop_tls_only_statements`: plain HTTP only (USE_SSL=1 would also bind port 443), so the
  bucket policy's deny of non-TLS requests would refuse everything under AUTH=true.
Not covered by this run: ministack's Step Functions invokes Lambda in-process without
evaluating the state machine's role, so StateMachineRole's grants are not exercised.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

from awscli.customizations.cloudformation.yamlhelper import yaml_parse

PINNED = {"ministack": "1.5.33", "aws-sam-translator": "1.115.0", "awscli": "1.46.3"}
REGION = "us-east-1"
ACCOUNT = "000000000000"  # ministack's default account
STACK = "backstop"
ARTIFACT_BUCKET = "backstop-artifacts"
DEPLOY_FUNCTION = "shop-deploy"
APPLICATION = "shop"
DB_NAME = "shop"
DB_ROLE = "shop_owner"
DB_URL_ENV = "SHOP_DB_URL"
ORDERS = 100  # rows in shop.orders; the SQL check expects exactly this many
ORDERS_LEFT_BY_BAD_DEPLOY = 40
RUNTIME_NEXT = "/2018-06-01/runtime/invocation/next"
COLD_INIT_RUNS = 5

# The stand-in deploy function: a Lambda custom runtime in bash, speaking the Runtime API with
# curl. The event's payload says whether this deploy breaks the data; either way the deploy
# itself reports success, so only the SQL check after it can catch the damage.
DEPLOY_BOOTSTRAP = r"""#!/bin/bash
set -u
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
headers="$(mktemp)"
while true; do
  event="$(curl -sS -D "$headers" "$api/next")" || exit 1
  request_id="$(tr -d '\r' <"$headers" | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p')"
  if printf '%s' "$event" | tr -d ' \n' | grep -q '"break":true'; then
    sql="DELETE FROM orders WHERE id > __KEEP__"
  else
    sql="ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text"
  fi
  if out="$("$PG_BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$SHOP_DB_URL" -c "$sql" 2>&1)"; then
    curl -sS -o /dev/null -X POST "$api/$request_id/response" -d "{\"ran\": \"$sql\"}"
  else
    out="$(printf '%s' "$out" | tr -d '"\\\n')"
    curl -sS -o /dev/null -X POST "$api/$request_id/error" \
      -H 'Lambda-Runtime-Function-Error-Type: Unhandled' \
      -d "{\"errorType\": \"DeployError\", \"errorMessage\": \"$out\"}"
  fi
done
""".replace("__KEEP__", str(ORDERS_LEFT_BY_BAD_DEPLOY))


def log(message):
    """Prints one progress line, flushed, so a slow step shows where the run is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra):
    """PATH, HOME and LANG only, plus `extra`: what every process this run starts gets."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def pid_alive(pid):
    """Whether a process with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid, name, wait=15.0):
    """SIGTERM to `pid`, SIGKILL if it is still there after `wait` seconds."""
    for sig, grace in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            if not pid_alive(pid):
                return
            time.sleep(0.1)
    log(f"warning: {name} (PID {pid}) did not stop")


def check_pins():
    """Fails unless the packages this run relies on are installed at their pinned versions."""
    for package, version in PINNED.items():
        installed = metadata.version(package)
        if installed != version:
            raise RuntimeError(f"{package} {installed} is installed, this run pins {version}")


# ---------------------------------------------------------------------------------------------
# The template: which functions, which binaries, and the emulator's package of it.
# ---------------------------------------------------------------------------------------------


def load_template(repo):
    """template.yaml as plain data. awscli's YAML loader turns the short tags (!Sub, !Ref,
    !GetAtt, !If ...) into their long forms (Fn::Sub ...), which JSON can hold."""
    return yaml_parse((repo / "template.yaml").read_text())


def template_functions(template):
    """{logical id: binary name} of every AWS::Serverless::Function, from the cargo-lambda
    build metadata (Metadata.BuildProperties.Binary)."""
    functions = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            functions[logical_id] = resource["Metadata"]["BuildProperties"]["Binary"]
    return functions


def wait_for_binaries(repo, binaries, timeout):
    """Waits until every debug binary exists under target/debug and none changed for two polls
    in a row (another session builds them; this run never does). Returns {name: path}."""
    paths = {name: repo / "target" / "debug" / name for name in binaries}
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        missing = [name for name, path in paths.items() if not path.is_file()]
        if not missing:
            current = {name: (p.stat().st_size, p.stat().st_mtime_ns) for name, p in paths.items()}
            if current == previous:
                return paths
            previous = current
        elif time.monotonic() > deadline:
            raise RuntimeError(f"debug binaries still missing after {timeout:.0f} s: {missing}")
        else:
            log(f"waiting for {len(missing)} debug binaries: {', '.join(missing)}")
        time.sleep(5 if not missing else 30)


def patch_conditions(template):
    """The second ministack workaround, on this run's copy of the template's Conditions.

    ministack 1.5.33 evaluates only Ref, Fn::Equals, Fn::And, Fn::Or, Fn::Not, Condition and
    Fn::Select in a condition (cloudformation/engine.py, _evaluate_conditions); any other
    function is compared as the unevaluated object. So `!Not [!Equals [!Join ["", !Ref List],
    ""]]` (HasVpc, HasDatabaseSecrets, HasEbsKmsKeys, ...) is always true, and the stack gets
    resources and statements AWS would leave out. Its Ref of a CommaDelimitedList is the
    parameter's raw string, empty exactly when the list has no member, so each
    `Fn::Join ["", {"Ref": P}]` in a condition becomes `{"Ref": P}`: the same answer, one
    ministack can compute. Returns the names of the conditions changed."""

    def rewrite(node):
        if isinstance(node, dict):
            join = node.get("Fn::Join")
            if (len(node) == 1 and isinstance(join, list) and join[0] == ""
                    and isinstance(join[1], dict) and list(join[1]) == ["Ref"]):
                return join[1]
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        return node

    changed = []
    conditions = template.get("Conditions", {})
    for name, expression in conditions.items():
        rewritten = rewrite(expression)
        if rewritten != expression:
            conditions[name] = rewritten
            changed.append(name)
    return changed


def drop_tls_only_statements(template):
    """What lets ministack enforce IAM (AUTH=true) over plain HTTP, on this run's copy.

    Statements of an AWS::S3::BucketPolicy that deny whatever arrives with
    aws:SecureTransport "false" (the template's DenyInsecureTransport) refuse every request of
    this run: ministack is served over plain HTTP, because its USE_SSL=1 also binds port 443
    beside the chosen free port. Those statements are removed (and a policy left with none),
    so IAM is enforced on everything else: every function's role must grant what it does.
    Returns the names of the statements removed."""
    removed = []
    for name, resource in list(template["Resources"].items()):
        if resource.get("Type") != "AWS::S3::BucketPolicy":
            continue
        document = resource["Properties"]["PolicyDocument"]
        kept = []
        for statement in document["Statement"]:
            secure = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
            if statement.get("Effect") == "Deny" and str(secure).lower() == "false":
                removed.append(f"{name}.{statement.get('Sid', '?')}")
            else:
                kept.append(statement)
        document["Statement"] = kept
        if not kept:
            del template["Resources"][name]
    return removed


def package_for_emulator(repo, template, binaries, out_dir):
    """Writes the emulator's copy of the template (JSON) into `out_dir` and returns its path:
    Globals' architecture x86_64 (the debug binaries are host binaries), each function's
    CodeUri a folder holding its binary as `bootstrap`, the cargo-lambda build metadata and the
    layers removed (a native run cannot mount a layer; PG_BIN_DIR points at the host's
    PostgreSQL instead), `patch_conditions` and `drop_tls_only_statements` applied, and the
    repository's state machine definition as it is.
    Returns (the template's path, the workarounds applied, {binary: its packaged bootstrap})."""
    template = json.loads(json.dumps(template))
    workarounds = [f"condition {name}: Fn::Join of a list Ref -> the Ref"
                   for name in patch_conditions(template)]
    workarounds += [f"bucket policy statement {name} removed (plain HTTP)"
                    for name in drop_tls_only_statements(template)]
    template["Globals"]["Function"]["Architectures"] = ["x86_64"]
    bootstraps = {}
    for logical_id, binary in template_functions(template).items():
        resource = template["Resources"][logical_id]
        code_dir = out_dir / "functions" / binary
        code_dir.mkdir(parents=True)
        bootstraps[binary] = code_dir / "bootstrap"
        shutil.copy(binaries[binary], bootstraps[binary])
        bootstraps[binary].chmod(0o755)
        del resource["Metadata"]
        resource["Properties"]["CodeUri"] = str(code_dir)
        resource["Properties"].pop("Layers", None)
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::StateMachine":
            definition = repo / resource["Properties"]["DefinitionUri"]
            resource["Properties"]["DefinitionUri"] = str(definition)
    path = out_dir / "template.json"
    path.write_text(json.dumps(template, indent=1))
    return path, workarounds, bootstraps


# ---------------------------------------------------------------------------------------------
# The services: PostgreSQL, ministack, the AWS CLI against it.
# ---------------------------------------------------------------------------------------------


class Postgres:
    """A throwaway PostgreSQL cluster from Debian's binaries: scram-sha-256 logins, TCP on
    127.0.0.1 at a free port, the unix socket in its own directory, run as the `postgres` OS
    user when this script runs as root (the server refuses to run as root)."""

    def __init__(self, directory):
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                            key=lambda p: int(p.parent.parent.name))
        if not candidates:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: "
                               "apt-get install -y postgresql postgresql-contrib")
        self.bin_dir = candidates[-1].parent
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        self.superuser_password = secrets.token_hex(16)
        self.role_password = secrets.token_hex(16)
        self.as_postgres = os.geteuid() == 0
        self.pid = None

    def _server(self, tool, *args):
        """Runs a server-side tool (initdb, pg_ctl) as the postgres OS user when we are root."""
        command = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.dir, env=clean_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self):
        """initdb, then pg_ctl start; the postmaster's PID is kept for `stop`."""
        self.dir.mkdir()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._server("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                     f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories='{self.dir}' -c fsync=off")
        self._server("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                     "-o", options, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self):
        """pg_ctl stop (fast), then the postmaster's PID is made sure of."""
        if self.pid is None:
            return
        with contextlib.suppress(RuntimeError):
            self._server("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        stop_pid(self.pid, "postgres")
        self.pid = None

    def url(self, db=DB_NAME):
        """The postgres:// URL of the non-superuser role, for the functions."""
        return f"postgres://{DB_ROLE}:{self.role_password}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db=DB_NAME, superuser=False):
        """Runs SQL over TCP (as the role, or the superuser) and returns psql's unaligned output."""
        user, password = (("postgres", self.superuser_password) if superuser
                          else (DB_ROLE, self.role_password))
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db, "-c", sql],
            env=clean_env(PGPASSWORD=password, PGCONNECT_TIMEOUT=10),
            capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_shop(self):
        """The non-superuser role (LOGIN CREATEDB: a swap restore creates and renames
        databases) owning `shop`, with `orders` holding ORDERS rows."""
        self.psql(f"CREATE ROLE {DB_ROLE} LOGIN CREATEDB PASSWORD '{self.role_password}'",
                  db="postgres", superuser=True)
        self.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}", db="postgres", superuser=True)
        self.psql("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL);"
                  f"INSERT INTO orders SELECT g, 'item ' || g, g % 7 + 1 "
                  f"FROM generate_series(1, {ORDERS}) g")

    def order_count(self):
        """Rows in shop.orders now."""
        return int(self.psql("SELECT count(*) FROM orders"))

    def databases(self):
        """The names of the cluster's databases (a swap restore keeps `shop_failed_...`)."""
        return self.psql("SELECT datname FROM pg_database ORDER BY 1", db="postgres",
                         superuser=True).split()


class Ministack:
    """ministack on 127.0.0.1 at a free port, in a clean environment, enforcing IAM.

    A provided.al2023 function runs natively: ministack extracts its zip, starts `bootstrap`
    as its own child process with a Runtime API of its own on 127.0.0.1 (a free port, in
    AWS_LAMBDA_RUNTIME_API) and keeps it warm between invocations. The process inherits
    ministack's whole environment, then the function's variables, AWS_REGION, the function's
    name and memory size, credentials of a session of the function's role (under AUTH=true)
    and AWS_ENDPOINT_URL pointing back at ministack, through which the functions reach its
    S3, Step Functions and EventBridge."""

    def __init__(self, venv_bin, directory):
        self.executable = venv_bin / "ministack"
        self.dir = directory
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "ministack.log"
        self.process = None

    def start(self):
        """Starts it and waits until healthy. GATEWAY_PORT picks the port, BIND_HOST the
        interface; SFTP_ENABLED=0 and IOT_MTLS_ENABLED=0 keep its optional SFTP and MQTT
        listeners (ports of their own) off; TMPDIR keeps its PID file and extracted function
        code in this run's directory; AUTH=true enforces IAM, with the key pair below as the
        account's root credentials (what the CLI uses) and role sessions for the functions."""
        (self.dir / "tmp").mkdir(parents=True)
        env = clean_env(
            GATEWAY_PORT=self.port,
            BIND_HOST="127.0.0.1",
            AUTH="true",
            SFTP_ENABLED="0",
            IOT_MTLS_ENABLED="0",
            TMPDIR=self.dir / "tmp",
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        with open(self.log_path, "w") as log_file:
            # A session of its own: the function processes it spawns share its process group,
            # whose id is its PID, so `stop` can end them with it.
            self.process = subprocess.Popen([str(self.executable)], env=env, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ministack exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.endpoint}/_ministack/health", timeout=2):
                    return
            time.sleep(0.5)
        raise RuntimeError("ministack did not become healthy in 60 s")

    def stop(self):
        """Stops ministack by its PID, then whatever is left in its process group (the function
        processes it started, whose group id is that PID)."""
        if self.process is None:
            return
        pid = self.process.pid
        stop_pid(pid, "ministack")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process = None


class Aws:
    """The AWS CLI (awscli v1, pinned) against ministack, in a clean environment."""

    def __init__(self, venv_bin, endpoint):
        self.executable = venv_bin / "aws"
        self.env = clean_env(
            AWS_ENDPOINT_URL=endpoint,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        )

    def text(self, *args):
        """Runs `aws ARGS` and returns its standard output; raises with its stderr on failure."""
        done = subprocess.run([str(self.executable), *map(str, args)], env=self.env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"aws {' '.join(map(str, args[:3]))} failed "
                               f"({done.returncode}): {done.stderr.strip()[-3000:]}"
                               f"{done.stdout.strip()[-2000:]}")
        return done.stdout

    def json(self, *args):
        """Runs `aws ARGS --output json` and returns the parsed answer ({} when empty)."""
        out = self.text(*args, "--output", "json")
        return json.loads(out) if out.strip() else {}


# ---------------------------------------------------------------------------------------------
# The stack on ministack.
# ---------------------------------------------------------------------------------------------


def create_deploy_function(aws, directory, pg):
    """The stand-in deploy function (provided.al2023, bash bootstrap) with a role of its own
    (it calls no AWS API), given the database URL and the PostgreSQL bin dir. Returns its ARN."""
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    role = aws.json("iam", "create-role", "--role-name", DEPLOY_FUNCTION,
                    "--assume-role-policy-document", json.dumps(trust))["Role"]["Arn"]
    bundle = directory / "shop-deploy.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, DEPLOY_BOOTSTRAP)
    config = aws.json(
        "lambda", "create-function", "--function-name", DEPLOY_FUNCTION,
        "--runtime", "provided.al2023", "--handler", "bootstrap", "--architectures", "x86_64",
        "--role", role, "--timeout", "60",
        "--zip-file", f"fileb://{bundle}",
        "--environment", json.dumps({"Variables": {DB_URL_ENV: pg.url(),
                                                   "PG_BIN_DIR": str(pg.bin_dir)}}))
    return config["FunctionArn"]


def deploy_stack(aws, template_path, overrides):
    """`aws cloudformation package` to a bucket on ministack, then `aws cloudformation deploy`;
    returns the stack's outputs once it is CREATE_COMPLETE."""
    aws.text("s3", "mb", f"s3://{ARTIFACT_BUCKET}")
    packaged = template_path.with_name("packaged.yaml")
    aws.text("cloudformation", "package", "--template-file", template_path,
             "--s3-bucket", ARTIFACT_BUCKET, "--output-template-file", packaged)
    aws.text("cloudformation", "deploy", "--template-file", packaged, "--stack-name", STACK,
             "--s3-bucket", ARTIFACT_BUCKET,
             "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
             "--parameter-overrides", *[f"{k}={v}" for k, v in overrides.items()])
    stack = aws.json("cloudformation", "describe-stacks", "--stack-name", STACK)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack {STACK} is {stack['StackStatus']}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def left_out_by_conditions(aws, template):
    """The template's conditioned resources the stack does not have (their condition false)."""
    created = {r["LogicalResourceId"] for r in aws.json(
        "cloudformation", "list-stack-resources", "--stack-name", STACK)["StackResourceSummaries"]}
    return sorted(name for name, resource in template["Resources"].items()
                  if "Condition" in resource and name not in created)


def log_format_env(config):
    """The third ministack workaround: the variables Lambda derives from a function's
    LoggingConfig. With LogFormat JSON, Lambda sets AWS_LAMBDA_LOG_FORMAT=JSON and
    AWS_LAMBDA_LOG_LEVEL (ApplicationLogLevel, INFO by default) in the function's environment,
    which the Rust runtime's tracing subscriber reads; ministack 1.5.33 sets neither, so the
    functions would log ANSI text. Given as ordinary variables, they make the logs JSON."""
    logging = config.get("LoggingConfig") or {}
    if logging.get("LogFormat") != "JSON":
        return {}
    return {"AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": logging.get("ApplicationLogLevel", "INFO")}


def configure_functions(aws, extra):
    """Adds `extra` and `log_format_env` to every stack function's environment (keeping its
    variables) with update-function-configuration. Returns {logical id: the function's
    configuration now}."""
    resources = aws.json("cloudformation", "list-stack-resources",
                         "--stack-name", STACK)["StackResourceSummaries"]
    configs = {}
    for resource in resources:
        if resource["ResourceType"] != "AWS::Lambda::Function":
            continue
        name = resource["PhysicalResourceId"]
        config = aws.json("lambda", "get-function-configuration", "--function-name", name)
        variables = {**config.get("Environment", {}).get("Variables", {}), **extra,
                     **log_format_env(config)}
        updated = aws.json("lambda", "update-function-configuration", "--function-name", name,
                           "--environment", json.dumps({"Variables": variables}))
        configs[resource["LogicalResourceId"]] = updated
    return configs


def check_definition(aws, state_machine_arn):
    """Fails when the deployed definition still holds a `${...}` (DefinitionSubstitutions such
    as Partition: !Ref AWS::Partition not applied). Returns its lambda:invoke resource."""
    definition = aws.json("stepfunctions", "describe-state-machine",
                          "--state-machine-arn", state_machine_arn)["definition"]
    if "${" in definition:
        raise RuntimeError("the deployed definition has unsubstituted ${...}")
    return json.loads(definition)["States"]["Prepare"]["Resource"]


def run_document(commit, breaks):
    """A database-only run document: back up `shop`, invoke the stand-in deploy (which breaks
    the data when `breaks`), check that every order is still there."""
    return {
        "application": APPLICATION,
        "version": {"commit": commit},
        "targets": [{"type": "database", "url_env": DB_URL_ENV}],
        "deploy": {"type": "lambda", "function_name": DEPLOY_FUNCTION,
                   "payload": {"break": breaks}},
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": str(ORDERS)}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 5},
    }


def run_execution(aws, state_machine_arn, name, document, timeout=240):
    """Starts one execution and waits for it to end. Returns describe-execution's answer with
    `path`, the states it entered in order, added."""
    arn = aws.json("stepfunctions", "start-execution", "--state-machine-arn", state_machine_arn,
                   "--name", name, "--input", json.dumps(document))["executionArn"]
    deadline = time.monotonic() + timeout
    while True:
        execution = aws.json("stepfunctions", "describe-execution", "--execution-arn", arn)
        if execution["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {name} still RUNNING after {timeout} s")
        time.sleep(1)
    events = aws.json("stepfunctions", "get-execution-history", "--execution-arn", arn)["events"]
    execution["path"] = [e["stateEnteredEventDetails"]["name"] for e in events
                         if "stateEnteredEventDetails" in e]
    return execution


def read_catalog(aws, bucket, prefix, backup_id, directory):
    """Lists the catalog (everything under `prefix`/), downloads the backup's manifest and,
    when there is one, its incident report (JSON and Markdown) into `directory`. Returns (the
    backup's keys, its manifest, its incident report or None)."""
    listed = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", f"{prefix}/")
    folder = f"{prefix}/{APPLICATION}/{backup_id}/"
    keys = [o["Key"] for o in listed.get("Contents", []) if o["Key"].startswith(folder)]
    read = {}
    for name in ("manifest.json", "incident.json", "incident.md"):
        if folder + name in keys:
            local = directory / backup_id / name
            aws.text("s3", "cp", f"s3://{bucket}/{folder}{name}", local)
            read[name] = local.read_text()
    if "manifest.json" not in read:
        raise RuntimeError(f"no manifest under {folder}: {keys}")
    incident = json.loads(read["incident.json"]) if "incident.json" in read else None
    return keys, json.loads(read["manifest.json"]), incident


# ---------------------------------------------------------------------------------------------
# Cold init.
# ---------------------------------------------------------------------------------------------


class RuntimeApiStub:
    """A Lambda Runtime API on 127.0.0.1 that only notes when the first
    GET /2018-06-01/runtime/invocation/next of a run arrives, and holds that long poll open."""

    def __init__(self):
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.first_next = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != RUNTIME_NEXT:
                    self.send_error(404)
                    return
                release = stub.release
                if not stub.arrived.is_set():
                    stub.first_next = time.monotonic()
                    stub.arrived.set()
                release.wait(30)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        """Lets any held poll go and starts listening for the next run's first `next`."""
        self.release.set()
        self.release = threading.Event()
        self.arrived.clear()
        self.first_next = None

    def close(self):
        """Stops serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def cold_init_ms(stub, name, bootstrap, env, directory):
    """One cold init of `bootstrap`: milliseconds from spawning it to its first `next`."""
    stub.reset()
    output = directory / f"{name}.out"
    with open(output, "w") as out:
        started = time.monotonic()
        process = subprocess.Popen([str(bootstrap)], env=env, cwd=bootstrap.parent, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if not stub.arrived.wait(30):
            raise RuntimeError(f"{name} never called next: {output.read_text()[-2000:]}")
        return (stub.first_next - started) * 1000
    finally:
        stop_pid(process.pid, name, wait=2)


def measure_cold_init(bootstraps, configs, endpoint, directory):
    """The median of COLD_INIT_RUNS cold inits of each packaged bootstrap, in the environment
    ministack gives a provided.* function: the variables the stack gave it (`configs` maps
    binary name to the deployed function's configuration), the Runtime API's address, the
    function's name, memory size and version, the region, credentials, and AWS_ENDPOINT_URL at
    ministack. Returns [(binary, function, median ms, [each run's ms])]."""
    directory.mkdir()
    stub = RuntimeApiStub()
    rows = []
    try:
        for binary, config in sorted(configs.items()):
            env = clean_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCOUNT,
                            AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                            AWS_DEFAULT_REGION=REGION,
                            AWS_LAMBDA_FUNCTION_NAME=config["FunctionName"],
                            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=config["MemorySize"],
                            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                            AWS_LAMBDA_RUNTIME_API=stub.address)
            env.update(config["Environment"]["Variables"])
            runs = [cold_init_ms(stub, binary, bootstraps[binary], env, directory)
                    for _ in range(COLD_INIT_RUNS)]
            rows.append((binary, config["FunctionName"], statistics.median(runs), runs))
    finally:
        stub.close()
    return rows


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def expect(condition, message, failures):
    """Records `message` as a failure unless `condition`; prints the verdict."""
    print(f"   {'ok  ' if condition else 'FAIL'} {message}", flush=True)
    if not condition:
        failures.append(message)


@dataclasses.dataclass
class Deployed:
    """The stack on ministack, as the executions and the cold-init measurement use it."""

    aws: Aws
    state_machine: str
    bucket: str
    prefix: str  # the catalog's key prefix (BACKSTOP_PREFIX)
    configs: dict  # {logical id: the function's configuration}
    bootstraps: dict  # {binary name: its packaged bootstrap}
    downloads: Path  # where catalog objects read back are kept

    def read_catalog(self, backup_id):
        """The backup's keys, manifest and incident report (see `read_catalog`)."""
        return read_catalog(self.aws, self.bucket, self.prefix, backup_id, self.downloads)


def backed_up_orders(manifest):
    """The row count of shop.orders the manifest's dump of `shop` records (None if absent)."""
    for database in manifest.get("databases", []):
        if database["database"] == DB_NAME:
            for table in database["tables"]:
                if table["table"] == "orders":
                    return table["rows"]
    return None


def check_passing_deploy(stack, pg, name, failures):
    """A deploy whose checks pass: SUCCEEDED, the manifest completed and marked deployed, the
    data untouched. Returns the execution."""
    print(f"\nA passing deploy ({name})", flush=True)
    execution = run_execution(stack.aws, stack.state_machine, name,
                              run_document("v2-good", breaks=False))
    print("   path: " + " > ".join(execution["path"]))
    expect(execution["status"] == "SUCCEEDED",
           f"execution {execution['status']} (error {execution.get('error')}, "
           f"cause {str(execution.get('cause'))[:300]})", failures)
    keys, manifest, incident = stack.read_catalog(name)
    print("   catalog: " + ", ".join(keys))
    expect(manifest["state"] == "completed" and manifest.get("deployed") and incident is None,
           f"manifest {manifest['state']}, {backed_up_orders(manifest)} orders backed up, "
           f"deployed: {manifest.get('deployed')}; incident report: {incident is not None}",
           failures)
    expect(pg.order_count() == ORDERS, f"{pg.order_count()} orders in {DB_NAME}", failures)
    return execution


def check_breaking_deploy(stack, pg, name, failures):
    """A deploy that deletes orders and reports success: the SQL check fails, the restore
    path puts the database back, the execution FAILS with DeployFailed, the incident report is
    in the catalog and the broken database is kept. Returns the execution."""
    print(f"\nA deploy that breaks the data ({name})", flush=True)
    execution = run_execution(stack.aws, stack.state_machine, name,
                              run_document("v3-bad", breaks=True))
    print("   path: " + " > ".join(execution["path"]))
    expect(execution["status"] == "FAILED" and execution.get("error") == "DeployFailed",
           f"execution {execution['status']} with error {execution.get('error')}", failures)
    print(f"   cause: {str(execution.get('cause'))[:400]}")
    keys, manifest, incident = stack.read_catalog(name)
    print("   catalog: " + ", ".join(keys))
    expect(manifest["state"] == "completed" and manifest["backup_id"] == name
           and backed_up_orders(manifest) == ORDERS,
           f"manifest {manifest['backup_id']}: {manifest['state']}, "
           f"{backed_up_orders(manifest)} orders backed up", failures)
    expect(incident is not None and incident["outcome"] == "DeployFailed"
           and bool(incident["timeline"]),
           f"incident.json: outcome {incident and incident['outcome']}, "
           f"original error {incident and incident['original_error']}, "
           f"restored {incident and incident['restored']}, "
           f"failed state {incident and incident['failed_state']}, "
           f"{len(incident['timeline']) if incident else 0} timeline entries", failures)
    expect(pg.order_count() == ORDERS, f"{pg.order_count()} orders in {DB_NAME} after the restore",
           failures)
    kept = [d for d in pg.databases() if d.startswith(f"{DB_NAME}_failed_")]
    expect(bool(kept), f"the broken database kept as {kept}", failures)
    return execution


def check_refused_entries(stack, pg, stamp, backup_id, failures):
    """What the stack refuses before touching anything: a run naming a database login its
    application is not mapped to (ApplicationSecrets), and an execution started with a
    restore entry guard never recorded (as anyone allowed to start executions could). Both
    end in InvalidRunDocument (error InvalidInput, cause NotAllowed), and the data is
    untouched. Returns the names."""
    print("\nEntries the stack refuses", flush=True)
    names = []
    unmapped = run_document("v4-unmapped", breaks=True)
    unmapped["targets"] = [{"type": "database", "url_env": "PATH"}]
    name = f"deployed-unmapped-{stamp}"
    execution = run_execution(stack.aws, stack.state_machine, name, unmapped)
    names.append(name)
    print("   unmapped login, path: " + " > ".join(execution["path"]))
    expect(execution["status"] == "FAILED" and execution["path"][-1] == "InvalidRunDocument"
           and "NotAllowed" in str(execution.get("cause")),
           f"unmapped login: {execution['status']} {execution.get('error')} "
           f"{str(execution.get('cause'))[:200]}", failures)
    forged = {"restore_of": {"application": APPLICATION, "backup_id": backup_id,
                             "failure": {"Error": "Forged", "Cause": "not from guard"}}}
    name = f"deployed-forged-{stamp}"
    execution = run_execution(stack.aws, stack.state_machine, name, forged)
    names.append(name)
    print("   forged restore entry, path: " + " > ".join(execution["path"]))
    expect(execution["status"] == "FAILED" and execution["path"][-1] == "InvalidRunDocument"
           and "NotAllowed" in str(execution.get("cause"))
           and "RestoreTargets" not in execution["path"],
           f"forged restore entry: {execution['status']} {execution.get('error')} "
           f"{str(execution.get('cause'))[:200]}", failures)
    expect(pg.order_count() == ORDERS, f"{pg.order_count()} orders in {DB_NAME}", failures)
    return names


def check_no_other_executions(stack, expected, failures):
    """The state machine ran only `expected`: nothing the stack reacts with (a FAILED protect
    execution goes to guard through EventBridge) started another execution, e.g. a second
    restore. Checked last, some seconds after the failed execution ended."""
    executions = stack.aws.json("stepfunctions", "list-executions", "--state-machine-arn",
                                stack.state_machine)["executions"]
    seen = sorted(f"{e['name']} {e['status']}" for e in executions)
    expect(sorted(e["name"] for e in executions) == sorted(expected),
           f"the state machine's executions: {', '.join(seen)}", failures)


def deploy(aws, repo, template, binaries, pg, work):
    """The stand-in deploy function, then the stack (packaged for the emulator, deployed until
    CREATE_COMPLETE), then the functions' native environment. Returns the `Deployed` stack."""
    deploy_arn = create_deploy_function(aws, work, pg)
    log(f"stand-in deploy function {deploy_arn}")
    template_path, workarounds, bootstraps = package_for_emulator(repo, template, binaries,
                                                                  work / "package")
    log(f"packaged for the emulator: {template_path}; ministack workarounds applied:")
    for workaround in workarounds or ["none"]:
        print(f"   {workaround}")
    # Every parameter has a default; these are what this run needs instead.
    overrides = {
        # The state machine's role may invoke the deploy function (AWS needs it; ministack
        # does not evaluate that role).
        "DeployFunctionArns": deploy_arn,
        # No scheduled prune or drill while the executions run.
        "RetentionSchedule": "off",
        "DrillSchedule": "off",
        # The one login the runs may use: the shop database's URL variable.
        "ApplicationSecrets": json.dumps({APPLICATION: [f"env:{DB_URL_ENV}"]}),
    }
    if "PostgresBinDir" in template.get("Parameters", {}):
        overrides["PostgresBinDir"] = pg.bin_dir  # PG_BIN_DIR: the host's PostgreSQL tools
    started = time.monotonic()
    outputs = deploy_stack(aws, template_path, overrides)
    log(f"stack {STACK} CREATE_COMPLETE in {time.monotonic() - started:.0f} s, parameters "
        + " ".join(f"{k}={v}" for k, v in overrides.items()))
    print("   left out by their conditions: "
          + ", ".join(left_out_by_conditions(aws, template)))
    state_machine = outputs["StateMachineArn"]
    log(f"state machine {state_machine}; Prepare's Resource is "
        f"{check_definition(aws, state_machine)}")
    configs = configure_functions(aws, {"PG_BIN_DIR": str(pg.bin_dir), DB_URL_ENV: pg.url()})
    log(f"PG_BIN_DIR and {DB_URL_ENV} added to the environment of {len(configs)} functions")
    prefix = next(iter(configs.values()))["Environment"]["Variables"]["BACKSTOP_PREFIX"]
    return Deployed(aws, state_machine, outputs["BucketName"], prefix, configs, bootstraps,
                    work / "catalog")


def run(repo, venv_bin, work, binaries_timeout):
    """The whole run in `work`; returns the list of failed expectations."""
    failures = []
    template = load_template(repo)
    functions = template_functions(template)
    binaries = wait_for_binaries(repo, functions.values(), binaries_timeout)
    log(f"{len(binaries)} debug binaries present")
    started = time.monotonic()

    with contextlib.ExitStack() as cleanup:
        pg = Postgres(work / "pg")
        cleanup.callback(pg.stop)
        pg.start()
        pg.create_shop()
        log(f"PostgreSQL {pg.bin_dir} on 127.0.0.1:{pg.port} (PID {pg.pid}): "
            f"{DB_NAME}.orders has {pg.order_count()} rows, owned by {DB_ROLE}")
        ministack = Ministack(venv_bin, work / "ministack")
        cleanup.callback(ministack.stop)
        ministack.start()
        log(f"ministack {PINNED['ministack']} at {ministack.endpoint} "
            f"(PID {ministack.process.pid})")
        aws = Aws(venv_bin, ministack.endpoint)

        stack = deploy(aws, repo, template, binaries, pg, work)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        good = check_passing_deploy(stack, pg, f"deployed-pass-{stamp}", failures)
        bad = check_breaking_deploy(stack, pg, f"deployed-break-{stamp}", failures)
        refused = check_refused_entries(stack, pg, stamp, good["name"], failures)

        print(f"\nCold init: process start to the first Runtime API next, median of "
              f"{COLD_INIT_RUNS} runs against a stub Runtime API", flush=True)
        by_binary = {binary: stack.configs[logical] for logical, binary in functions.items()}
        rows = measure_cold_init(stack.bootstraps, by_binary, ministack.endpoint,
                                 work / "cold-init")
        print(f"   {'binary':<26} {'median':>9}   runs (ms)")
        for binary, _, median, runs in rows:
            print(f"   {binary:<26} {median:>6.1f} ms   " + " ".join(f"{r:.1f}" for r in runs))

        print("\nAfterwards", flush=True)
        check_no_other_executions(stack, [good["name"], bad["name"], *refused], failures)

    print(f"\nSummary ({time.monotonic() - started:.0f} s once the binaries were there)")
    print(f"   {good['name']}: {good['status']}")
    print(f"   {bad['name']}: {bad['status']} {bad.get('error') or ''}")
    print(f"   catalog s3://{stack.bucket}/{stack.prefix}/{APPLICATION}/ read back into "
          f"{stack.downloads}")
    print(f"   {len(failures)} failed expectation(s)")
    return failures


def main():
    """Parses the arguments, runs, cleans up, and exits non-zero on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the Backstop repository")
    parser.add_argument("--binaries-timeout", type=float, default=1800,
                        help="seconds to wait for the debug binaries (default 1800)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work folder (logs, package, PostgreSQL data) on success too")
    args = parser.parse_args()
    check_pins()
    # A SIGTERM (a CI timeout) unwinds like an error, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    venv_bin = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="backstop-deployed-"))
    work.chmod(0o711)  # the postgres OS user must reach its directory inside
    started = time.monotonic()
    try:
        failures = run(args.repo.resolve(), venv_bin, work, args.binaries_timeout)
    except BaseException as error:  # an error, Ctrl-C or SIGTERM: reported once, run failed
        print(f"\nFAILED: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"logs kept in {work}", file=sys.stderr)
        sys.exit(143 if isinstance(error, SystemExit) else 1)
    elapsed = time.monotonic() - started
    if failures:
        print(f"\n{len(failures)} expectation(s) failed in {elapsed:.0f} s; logs kept in {work}")
        sys.exit(1)
    if args.keep_work:
        print(f"\nwork folder kept: {work}")
    else:
        shutil.rmtree(work)
    print(f"\nAll as expected in {elapsed:.0f} s.")


if __name__ == "__main__":
    main()
