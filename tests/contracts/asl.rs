//! The contract between `statemachine/protect.asl.json` and the Rust code: every error name
//! the ASL's Retry and Catch match is one the code can raise (or a `States.*`/`Lambda.*`
//! name AWS raises), and every JSONPath the ASL reads exists on the Rust type of that
//! state's input or output. The data flow of an execution is walked with values built from
//! the Rust types, each task's parameters are evaluated the way Step Functions does, and the
//! resulting payload must deserialize into that function's input type.

use serde_json::{json, Value};

use backstop_core::model::incident::IncidentOutcome;
use backstop_core::model::job::{InstanceJob, Job, JobReport, JobState, TargetRestore, TargetTask};
use backstop_core::model::manifest::InstanceBackupMode;
use backstop_core::model::poll::PollPolicy;
use backstop_core::model::run::{ChecksProgress, ChecksStatus, Deploy, WaitFor};
use backstop_core::tasks::restore::RestoreTask;
use backstop_core::tasks::verify::authorize_restore::AuthorizedRestore;
use backstop_core::tasks::verify::{VerifyReport, VerifyTask};
use backstop_core::Error;

const ASL: &str = include_str!("../../statemachine/protect.asl.json");

fn asl() -> Value {
    serde_json::from_str(ASL).expect("the ASL is JSON")
}

fn all_states(states: &Value, out: &mut Vec<(String, Value)>) {
    for (name, state) in states.as_object().unwrap() {
        out.push((name.clone(), state.clone()));
        if let Some(inner) = state.pointer("/ItemProcessor/States") {
            all_states(inner, out);
        }
    }
}

fn states() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    all_states(&asl()["States"], &mut out);
    out
}

fn state(name: &str) -> Value {
    states()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no state {name}"))
        .1
}

#[test]
fn every_error_name_the_asl_matches_is_one_the_code_raises() {
    let mut names = Vec::new();
    for (state, s) in states() {
        for key in ["Retry", "Catch"] {
            for rule in s[key].as_array().into_iter().flatten() {
                for e in rule["ErrorEquals"].as_array().unwrap() {
                    names.push((state.clone(), e.as_str().unwrap().to_string()));
                }
            }
        }
    }
    assert!(
        names.iter().any(|(_, n)| n == "Throttled"),
        "Throttled is retried"
    );
    for (state, name) in &names {
        // Sandbox.Timedout: a function that ran out of time, as lambda:invoke reports it.
        let aws = name.starts_with("States.")
            || name.starts_with("Lambda.")
            || name == "Sandbox.Timedout";
        assert!(
            aws || Error::ALL_TYPES.contains(&name.as_str()),
            "{state} matches {name}, which no code raises"
        );
    }
    // Retry is for named transient errors only, never everything.
    for (state, s) in states() {
        for rule in s["Retry"].as_array().into_iter().flatten() {
            let list = rule["ErrorEquals"].as_array().unwrap();
            assert!(
                !list.iter().any(|e| e == "States.ALL"),
                "{state} retries States.ALL"
            );
        }
    }
}

/// Reads a reference path: `$`, `$.a.b`, `$$.Execution.Name`, `$$.Map.Item.Value`.
fn read(path: &str, input: &Value, ctx: &Value, at: &str) -> Value {
    let (root, rest) = if let Some(r) = path.strip_prefix("$$") {
        (ctx, r)
    } else if let Some(r) = path.strip_prefix('$') {
        (input, r)
    } else {
        panic!("{at}: {path} is not a path");
    };
    let mut v = root;
    for seg in rest.split('.').filter(|s| !s.is_empty()) {
        v = v
            .get(seg)
            .unwrap_or_else(|| panic!("{at}: {path} does not exist in {root}"));
    }
    v.clone()
}

/// Evaluates a Parameters / ItemSelector / ResultSelector template.
fn eval(template: &Value, input: &Value, ctx: &Value, at: &str) -> Value {
    match template {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                match k.strip_suffix(".$") {
                    Some(key) => {
                        out.insert(key.to_string(), read(v.as_str().unwrap(), input, ctx, at));
                    }
                    None => {
                        out.insert(k.clone(), eval(v, input, ctx, at));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| eval(i, input, ctx, at)).collect())
        }
        other => other.clone(),
    }
}

/// Applies a state's ResultSelector and ResultPath to a task result.
fn after(state_name: &str, input: &Value, result: Value, ctx: &Value) -> Value {
    let s = state(state_name);
    let result = match s.get("ResultSelector") {
        Some(sel) => eval(sel, &result, ctx, state_name),
        None => result,
    };
    let result = match s.get("OutputPath").and_then(Value::as_str) {
        Some(p) => read(p, &result, ctx, state_name),
        None => result,
    };
    match s.get("ResultPath") {
        Some(Value::Null) => input.clone(),
        Some(Value::String(p)) if p == "$" => result,
        Some(Value::String(p)) => {
            let mut out = input.clone();
            let key = p.strip_prefix("$.").unwrap();
            out[key] = result;
            out
        }
        _ => result,
    }
}

/// The lambda:invoke payload a Task state sends.
fn payload(state_name: &str, input: &Value, ctx: &Value) -> Value {
    let s = state(state_name);
    let params = eval(&s["Parameters"], input, ctx, state_name);
    params["Payload"].clone()
}

fn function_of(state_name: &str) -> String {
    state(state_name)["Parameters"]["FunctionName"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn invoke_result(payload: Value) -> Value {
    json!({"StatusCode": 200, "Payload": payload})
}

fn run_document() -> Value {
    json!({
        "application": "shop",
        "version": {"commit": "abc123", "pipeline_execution_id": "p-1"},
        "targets": [
            {"type": "database", "url_env": "SHOP_DB_URL"},
            {"type": "instance", "instance_id": "i-0a1"},
            {"type": "instance", "tags": {"app": "shop"}, "mode": "image", "restore_mode": "replace-root"}
        ],
        "deploy": {"type": "lambda", "function_name": "shop-migrate", "payload": {"to": "v2"}},
        "checks": {"http": [{"url": "http://127.0.0.1:1/health"}],
                   "sql": [{"query": "SELECT 1", "expect": "1"}]},
        "policy": {"wait_for": "started", "first_wait_seconds": 10}
    })
}

fn job_report(status: JobState) -> Value {
    let job = Job::InstanceBackup {
        jobs: vec![InstanceJob {
            backup_id: "exec-1".to_string(),
            application: "shop".to_string(),
            instance_id: "i-0a1".to_string(),
            mode: InstanceBackupMode::Snapshots,
            snapshot_ids: vec!["snap-1".to_string()],
            image_id: None,
            started_at: time::OffsetDateTime::UNIX_EPOCH,
        }],
        wait_for: WaitFor::Completed,
        poll: PollPolicy::default(),
    };
    serde_json::to_value(JobReport {
        job,
        status,
        next_wait_seconds: 15,
        progress: 40,
        detail: "0 of 1 snapshots completed".to_string(),
    })
    .unwrap()
}

/// Walks one Map's poll loop: the item payload is the function's input type, the job report
/// has every field the Choice and Wait read, and poll-job accepts the report back.
fn walk_loop(map: &str, start: &str, input: &Value, exec: &Value, check_item: impl Fn(Value)) {
    let m = state(map);
    let items = read(m["ItemsPath"].as_str().unwrap(), input, exec, map);
    for item in items.as_array().unwrap() {
        let mut ctx = exec.clone();
        ctx["Map"] = json!({"Item": {"Value": item, "Index": 0}});
        let selected = eval(&m["ItemSelector"], input, &ctx, map);
        check_item(payload(start, &selected, &ctx));
        let report = after(
            start,
            &selected,
            invoke_result(job_report(JobState::Pending)),
            &ctx,
        );
        let choice = state(&format!("{start}Pending?"));
        for rule in choice["Choices"].as_array().unwrap() {
            read(rule["Variable"].as_str().unwrap(), &report, &ctx, "Choice");
        }
        let wait = state(&format!("{start}Wait"));
        let seconds = read(wait["SecondsPath"].as_str().unwrap(), &report, &ctx, "Wait");
        assert!(seconds.is_u64());
        let poll = format!("{start}Poll");
        assert_eq!(function_of(&poll), "${PollJobFunctionArn}");
        let sent = payload(&poll, &report, &ctx);
        let back: JobReport = serde_json::from_value(sent).expect("poll-job reads a job report");
        assert_eq!(back.status, JobState::Pending);
    }
}

#[test]
fn every_path_the_asl_reads_exists_on_the_rust_types_it_flows_through() {
    let exec = json!({"Execution": {"Name": "20261125T150000Z-0badc0de", "Id": "arn"}});
    // Prepare: verify(mode run) gets the raw document and returns it normalized.
    assert_eq!(function_of("Prepare"), "${VerifyFunctionArn}");
    let raw = run_document();
    let task: VerifyTask = serde_json::from_value(payload("Prepare", &raw, &exec)).unwrap();
    let VerifyTask::Run(run) = task else {
        panic!("Prepare sends mode run")
    };
    run.document.check().unwrap();
    let normalized = serde_json::to_value(run.document).unwrap();
    let prepared = after("Prepare", &raw, invoke_result(normalized), &exec);
    assert_eq!(state("Prepare")["Next"], "NameBackup");
    // The backup is named in a Pass state: every engine resolves $$.Execution.Name there.
    let s1 = eval(
        &state("NameBackup")["Parameters"],
        &prepared,
        &exec,
        "NameBackup",
    );
    assert_eq!(s1["backup_id"], "20261125T150000Z-0badc0de", "{s1}");
    assert!(s1["run"]["policy"]["max_wait_seconds"].is_u64(), "{s1}");

    assert_eq!(function_of("StartBackup"), "${StartBackupFunctionArn}");
    walk_loop("BackupTargets", "StartBackup", &s1, &exec, |p| {
        let t: TargetTask = serde_json::from_value(p).expect("start-backup reads a target task");
        assert_eq!(t.application, "shop");
        assert_eq!(t.backup_id, "20261125T150000Z-0badc0de");
    });

    let verify_backup: VerifyTask =
        serde_json::from_value(payload("VerifyBackup", &s1, &exec)).unwrap();
    assert!(matches!(verify_backup, VerifyTask::Backup(_)));
    let report = serde_json::to_value(VerifyReport {
        summary: "ok".to_string(),
        cause: None,
    })
    .unwrap();
    let s2 = after("VerifyBackup", &s1, invoke_result(report), &exec);

    let choose = state("ChooseDeploy");
    for rule in choose["Choices"].as_array().unwrap() {
        read(
            rule["Variable"].as_str().unwrap(),
            &s2,
            &exec,
            "ChooseDeploy",
        );
    }
    // The deploy Lambda gets the run's ids and its own payload.
    let deploy = eval(
        &state("DeployLambda")["Parameters"],
        &s2,
        &exec,
        "DeployLambda",
    );
    assert_eq!(deploy["FunctionName"], "shop-migrate");
    assert_eq!(deploy["Payload"]["payload"]["to"], "v2");
    let s3 = after(
        "DeployLambda",
        &s2,
        invoke_result(json!({"ok": true})),
        &exec,
    );
    // A CodeBuild deploy reads its project from the run document.
    let mut cb = s2.clone();
    cb["run"]["deploy"] = serde_json::to_value(Deploy::Codebuild {
        project_name: "shop-deploy".to_string(),
    })
    .unwrap();
    let build = eval(
        &state("DeployCodeBuild")["Parameters"],
        &cb,
        &exec,
        "DeployCodeBuild",
    );
    assert_eq!(build["ProjectName"], "shop-deploy");

    // The checks begin with no progress (NameBackup's checks: null) ...
    let checks: VerifyTask = serde_json::from_value(payload("VerifyDeploy", &s3, &exec)).unwrap();
    let VerifyTask::Deployment(first) = checks else {
        panic!("VerifyDeploy sends mode deployment")
    };
    assert_eq!(first.checks, None);
    // ... and while verify answers PENDING, loop through ChecksWait with its progress.
    let pending = ChecksProgress {
        status: ChecksStatus::Pending,
        rounds: 2,
        started_at: time::macros::datetime!(2026-11-25 15:00 UTC),
        next_wait_seconds: 20,
        summary: "1 HTTP, 0 SQL and 0 alarm check(s) passed 2 time(s) in a row over 20 s".into(),
    };
    let s4 = after(
        "VerifyDeploy",
        &s3,
        invoke_result(serde_json::to_value(&pending).unwrap()),
        &exec,
    );
    assert_eq!(state("VerifyDeploy")["Next"], "ChecksPending?");
    let choice = &state("ChecksPending?")["Choices"][0];
    assert_eq!(
        read(
            choice["Variable"].as_str().unwrap(),
            &s4,
            &exec,
            "ChecksPending?"
        ),
        "PENDING"
    );
    assert_eq!(choice["Next"], "ChecksWait");
    assert_eq!(state("ChecksWait")["Next"], "VerifyDeploy");
    let wait = read(
        state("ChecksWait")["SecondsPath"].as_str().unwrap(),
        &s4,
        &exec,
        "ChecksWait",
    );
    assert_eq!(wait, 20);
    let again: VerifyTask = serde_json::from_value(payload("VerifyDeploy", &s4, &exec)).unwrap();
    let VerifyTask::Deployment(again) = again else {
        panic!("VerifyDeploy sends mode deployment")
    };
    assert_eq!(again.checks, Some(pending));
    assert_eq!(state("ChecksPending?")["Default"], "Protected");

    // The restore path, entered from a Catch with the failure at $.failure.
    let mut failed = s3.clone();
    failed["failure"] = json!({"Error": "CommandFailed", "Cause": "{\"errorMessage\":\"boom\"}"});
    assert_eq!(function_of("Restore"), "${RestoreFunctionArn}");
    walk_loop("RestoreTargets", "Restore", &failed, &exec, |p| {
        let t: RestoreTask = serde_json::from_value(p).expect("restore reads a restore task");
        assert_eq!(t.restore_id, "20261125T150000Z-0badc0de");
    });
    // Each iteration ends in RestoreDone or, caught, in RestoreTargetFailed; the Map puts
    // their outputs at $.restores, which verify reads as typed per-target outcomes.
    let done = eval(
        &state("RestoreDone")["Parameters"],
        &job_report(JobState::Completed),
        &exec,
        "RestoreDone",
    );
    for task in ["Restore", "RestorePoll"] {
        let catch = &state(task)["Catch"][0];
        assert_eq!(catch["Next"], "RestoreTargetFailed", "{task}");
        assert_eq!(catch["ResultPath"], "$.failure", "{task}");
    }
    let caught = json!({"failure": {"Error": "ChecksumMismatch",
        "Cause": "{\"errorType\":\"ChecksumMismatch\",\"errorMessage\":\"bad\"}"}});
    let target_failed = eval(
        &state("RestoreTargetFailed")["Parameters"],
        &caught,
        &exec,
        "RestoreTargetFailed",
    );
    let failed = after(
        "RestoreTargets",
        &failed,
        json!([done.clone(), target_failed]),
        &exec,
    );
    let vr: VerifyTask = serde_json::from_value(payload("VerifyRestore", &failed, &exec)).unwrap();
    let VerifyTask::Restore(vr) = vr else {
        panic!("VerifyRestore sends mode restore")
    };
    assert_eq!(
        vr.restores,
        [
            TargetRestore::Completed {
                detail: "0 of 1 snapshots completed".to_string(),
                job: Some(
                    serde_json::from_value(job_report(JobState::Completed)["job"].clone()).unwrap()
                ),
            },
            TargetRestore::Failed {
                error: "ChecksumMismatch".to_string(),
                cause: "{\"errorType\":\"ChecksumMismatch\",\"errorMessage\":\"bad\"}".to_string()
            }
        ]
    );
    let restored = serde_json::to_value(VerifyReport {
        summary: "restored".to_string(),
        cause: Some("{}".to_string()),
    })
    .unwrap();
    let s4 = after("VerifyRestore", &failed, invoke_result(restored), &exec);
    // The incident report, on both failed endings, passes its input through to the Fail.
    let mut exec_id = exec.clone();
    exec_id["Execution"]["Id"] = json!("arn:aws:states:us-east-1:1:execution:protect:x");
    assert_eq!(state("VerifyRestore")["Next"], "ReportDeployFailure");
    let report: VerifyTask =
        serde_json::from_value(payload("ReportDeployFailure", &s4, &exec_id)).unwrap();
    let VerifyTask::Incident(incident) = report else {
        panic!("ReportDeployFailure sends mode incident")
    };
    assert_eq!(incident.outcome, IncidentOutcome::DeployFailed);
    assert_eq!(incident.restores.len(), 2);
    let s5 = after(
        "ReportDeployFailure",
        &s4,
        invoke_result(json!({})),
        &exec_id,
    );
    assert_eq!(s5, s4, "the report passes its input through");
    assert_eq!(state("ReportDeployFailure")["Next"], "DeployFailed");
    read(
        state("DeployFailed")["CausePath"].as_str().unwrap(),
        &s5,
        &exec_id,
        "DeployFailed",
    );
    for from in ["RestoreTargets", "VerifyRestore"] {
        assert_eq!(state(from)["Catch"][0]["Next"], "ReportRestoreFailure");
    }
    // Entered from the Map's Catch, so without $.restores.
    let mut restore_failed = s3.clone();
    restore_failed["failure"] = json!({"Error": "CommandFailed", "Cause": "boom"});
    restore_failed["restore_failure"] = json!({"Error": "RestoreIncomplete", "Cause": "why"});
    let report: VerifyTask =
        serde_json::from_value(payload("ReportRestoreFailure", &restore_failed, &exec_id)).unwrap();
    assert!(
        matches!(&report, VerifyTask::Incident(i) if i.outcome == IncidentOutcome::RestoreFailed),
        "{report:?}"
    );
    assert_eq!(state("ReportRestoreFailure")["Next"], "RestoreFailed");
    for name in ["ReportDeployFailure", "ReportRestoreFailure"] {
        let s = state(name);
        assert_eq!(s["ResultPath"], Value::Null, "{name}");
        assert_eq!(
            s["Catch"][0]["Next"], s["Next"],
            "{name}: a failed report still fails"
        );
    }
    // Guard mode enters the restore path through GuardRestore, which sends verify the entry and
    // the execution's name (authorize_restore) and puts the authorised backup, the run the
    // backup recorded and the stage failure where the restore path reads them.
    let entry = state("Entry");
    assert_eq!(entry["Choices"][0]["Variable"], "$.restore_of");
    assert_eq!(entry["Choices"][0]["Next"], "GuardRestore");
    assert_eq!(entry["Default"], "Prepare");
    assert_eq!(state("GuardRestore")["Next"], "RestoreTargets");
    let guard_exec =
        json!({"Execution": {"Name": "guard-20261125T150000Z-0badc0de", "Id": "arn:guard"}});
    let guard_in = json!({"restore_of": {
        "application": "shop",
        "backup_id": "20261125T150000Z-0badc0de",
        "failure": {"Error": "PipelineStageFailed", "Cause": "stage Deploy failed"}
    }});
    let asked: VerifyTask =
        serde_json::from_value(payload("GuardRestore", &guard_in, &guard_exec)).unwrap();
    let VerifyTask::AuthorizeRestore(asked) = asked else {
        panic!("GuardRestore sends mode authorize_restore")
    };
    assert_eq!(asked.execution_name, "guard-20261125T150000Z-0badc0de");
    assert_eq!(asked.request.backup_id, "20261125T150000Z-0badc0de");
    let authorized = AuthorizedRestore {
        backup_id: asked.request.backup_id.clone(),
        run: serde_json::from_value(s1["run"].clone()).unwrap(),
        failure: asked.request.failure.clone(),
    };
    let entered = after(
        "GuardRestore",
        &guard_in,
        invoke_result(serde_json::to_value(&authorized).unwrap()),
        &guard_exec,
    );
    walk_loop("RestoreTargets", "Restore", &entered, &guard_exec, |p| {
        let t: RestoreTask = serde_json::from_value(p).expect("restore reads a restore task");
        assert_eq!(t.task.backup_id, "20261125T150000Z-0badc0de");
        assert_eq!(t.restore_id, "guard-20261125T150000Z-0badc0de");
    });
    let guarded = after("RestoreTargets", &entered, json!([done]), &guard_exec);
    let vr: VerifyTask =
        serde_json::from_value(payload("VerifyRestore", &guarded, &guard_exec)).unwrap();
    let VerifyTask::Restore(vr) = vr else {
        panic!("VerifyRestore sends mode restore")
    };
    assert_eq!(vr.backup_id, "20261125T150000Z-0badc0de");
    assert_eq!(vr.failure.error, "PipelineStageFailed");
    assert_eq!(vr.failure.cause, "stage Deploy failed");
    // A failed backup is recorded in its manifest before the execution fails.
    let mut backup_failed = s1.clone();
    backup_failed["failure"] = json!({"Error": "DumpFailed", "Cause": "pg_dump: …"});
    let recorded: VerifyTask =
        serde_json::from_value(payload("RecordBackupFailure", &backup_failed, &exec)).unwrap();
    let VerifyTask::BackupFailed(recorded) = recorded else {
        panic!("RecordBackupFailure sends mode backup_failed")
    };
    assert_eq!(recorded.failure.error, "DumpFailed");
    assert_eq!(state("RecordBackupFailure")["Next"], "BackupFailed");
    // Every Fail state's cause path is one the Catch that leads there fills.
    for (name, result_path) in [
        ("BackupFailed", "failure"),
        ("RestoreFailed", "restore_failure"),
        ("InvalidRunDocument", "failure"),
        ("PrepareFailed", "failure"),
    ] {
        let mut caught = s3.clone();
        caught[result_path] = json!({"Error": "X", "Cause": "why"});
        read(
            state(name)["CausePath"].as_str().unwrap(),
            &caught,
            &exec,
            name,
        );
    }
}

/// Each `${Name}` the ASL holds, in order of first appearance.
fn substitutions_used() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = ASL;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let end = rest.find('}').expect("a closed substitution");
        let name = rest[..end].to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[end..];
    }
    out
}

#[test]
fn every_resource_is_partition_aware_and_every_substitution_is_filled_by_the_template() {
    for (name, state) in states() {
        if let Some(resource) = state["Resource"].as_str() {
            assert!(
                resource.starts_with("arn:${Partition}:"),
                "{name}: Resource {resource} names a partition (China and GovCloud have their own)"
            );
        }
    }
    let template =
        std::fs::read_to_string(format!("{}/template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let block = template
        .split("DefinitionSubstitutions:")
        .nth(1)
        .expect("the template has DefinitionSubstitutions");
    let filled: Vec<&str> = block
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.contains(": !"))
        .filter_map(|l| l.split(':').next())
        .collect();
    let used = substitutions_used();
    assert!(used.contains(&"Partition".to_string()), "{used:?}");
    for name in &used {
        assert!(
            filled.contains(&name.as_str()),
            "${{{name}}} in the ASL is not in the template's DefinitionSubstitutions {filled:?}"
        );
    }
    assert!(
        template.contains("Partition: !Ref AWS::Partition"),
        "the partition comes from the stack"
    );
}

/// The state a Catch of `state_name` sends `error` to.
fn caught_by(state_name: &str, error: &str) -> String {
    state(state_name)["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["ErrorEquals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == error || e == "States.ALL")
        })
        .map(|c| c["Next"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn prepare_reports_a_bad_document_as_such_and_any_other_failure_under_its_own_name() {
    // What the document names wrong, or does not exist: InvalidInput.
    for document_error in [
        "InvalidInput",
        "SecretUnusable",
        "InstanceNotFound",
        "NoInstancesMatched",
        "NoEbsVolumes",
    ] {
        assert_eq!(caught_by("Prepare", document_error), "InvalidRunDocument");
    }
    // A timeout, a crash, a refused permission or an unavailable service is not the
    // document's fault: the execution fails with that error's own name.
    for other in [
        "States.Timeout",
        "Lambda.Unknown",
        "CloudWatch",
        "StepFunctions",
        "Throttled",
    ] {
        assert_eq!(caught_by("Prepare", other), "PrepareFailed", "{other}");
    }
    let failed = state("PrepareFailed");
    assert_eq!(failed["ErrorPath"], "$.failure.Error");
    assert_eq!(failed["CausePath"], "$.failure.Cause");
    assert_eq!(state("InvalidRunDocument")["Error"], "InvalidInput");
}

#[test]
fn a_deploy_that_lambda_never_ran_is_retried_not_restored() {
    let retry = state("DeployLambda")["Retry"].as_array().unwrap().clone();
    let retried: Vec<&str> = retry
        .iter()
        .flat_map(|r| r["ErrorEquals"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    for error in [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ] {
        assert!(
            retried.contains(&error),
            "{error} is not retried: {retried:?}"
        );
    }
    // The deploy's own failure is never retried: it goes to the restore.
    assert!(!retried.contains(&"States.TaskFailed"), "{retried:?}");
    assert_eq!(
        caught_by("DeployLambda", "States.TaskFailed"),
        "RestoreTargets"
    );
}
