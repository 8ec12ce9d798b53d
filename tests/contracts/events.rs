//! The sample events in `events/` are valid inputs of their functions (so `sam local invoke`
//! and `cargo lambda invoke` get what the state machine, CodePipeline and EventBridge send),
//! a missing or malformed field is `InvalidInput` before any AWS call, and the example
//! pipeline passes valid run documents.

use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use backstop_core::model::job::{JobReport, JobState, TargetTask};
use backstop_core::model::run::RunDocument;
use backstop_core::tasks::guard::{ExecutionDetail, GuardEvent, StageEvent, EXECUTION_EVENT};
use backstop_core::tasks::restore::RestoreTask;
use backstop_core::tasks::verify::VerifyTask;
use backstop_core::tasks::{check_scheduled, invoke, ScheduledEvent};
use backstop_core::{Config, Context};
use serde_json::{json, Value};

use crate::support::offline::guarded;
use crate::support::{closed_port_shared, sample_event as event, FakeAws};

#[test]
fn every_sample_event_is_a_valid_input_of_its_function() {
    let t: TargetTask = serde_json::from_value(event("start-backup")).unwrap();
    assert_eq!(t.application, "shop");
    let j: JobReport = serde_json::from_value(event("poll-job")).unwrap();
    assert_eq!(j.status, JobState::Pending);
    let r: RestoreTask = serde_json::from_value(event("restore")).unwrap();
    assert_eq!(r.restore_id, r.task.backup_id);
    for mode in ["run", "backup", "deployment"] {
        let v: VerifyTask = serde_json::from_value(event(&format!("verify-{mode}")))
            .unwrap_or_else(|e| panic!("verify-{mode}: {e}"));
        match (mode, v) {
            ("run", VerifyTask::Run(run)) => {
                run.document.check().unwrap();
                assert_eq!(run.document.checks.consecutive, 3);
            }
            ("backup", VerifyTask::Backup(b)) => assert_eq!(b.application, "shop"),
            ("deployment", VerifyTask::Deployment(d)) => d.run.check().unwrap(),
            (mode, other) => panic!("verify-{mode} is {other:?}"),
        }
    }
    let job: CodePipelineJobEvent = serde_json::from_value(event("pipeline-action")).unwrap();
    let data = &job.code_pipeline_job.data;
    assert!(data.continuation_token.is_none());
    assert!(job.code_pipeline_job.id.is_some());
    let params = data
        .action_configuration
        .configuration
        .user_parameters
        .as_deref()
        .unwrap();
    let doc = RunDocument::from_json(params).unwrap();
    assert_eq!(doc.version.commit.as_deref(), Some("3f2a9c1"));
    // The schedules deliver EventBridge's Scheduled Event; the policy is the function's own.
    for name in ["prune", "drill"] {
        let scheduled: ScheduledEvent = serde_json::from_value(event(name)).unwrap();
        check_scheduled(&scheduled).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(scheduled.detail_type, "Scheduled Event");
    }
    let stage: StageEvent = serde_json::from_value(event("guard")).unwrap();
    assert_eq!(stage.source, "aws.codepipeline");
    assert_eq!(
        (
            stage.detail.pipeline.as_str(),
            stage.detail.stage.as_str(),
            stage.detail.state.as_str()
        ),
        ("shop-pipeline", "Deploy", "FAILED")
    );
    // Guard also takes the status change of a protect execution that ended.
    let ended: GuardEvent = serde_json::from_value(event("guard-execution-ended")).unwrap();
    assert_eq!(ended.detail_type, EXECUTION_EVENT);
    let detail: ExecutionDetail = serde_json::from_value(ended.detail).unwrap();
    assert_eq!(detail.status, "ABORTED");
    assert!(detail.execution_arn.ends_with(&detail.name));
    let listed: Vec<String> = std::fs::read_dir(format!("{}/events", crate::support::root()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(
        listed.len(),
        11,
        "a new event needs a check here: {listed:?}"
    );
}

/// `event(name)` with `change` applied.
fn changed(name: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut e = event(name);
    change(&mut e);
    e
}

#[test]
fn a_missing_or_malformed_field_is_invalid_input_and_calls_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Every AWS call goes to the fake, which records it (and answers none).
    let aws = FakeAws::new();
    let ctx = Context::new(aws.shared(), guarded(Config::new("backups", "backstop"))).unwrap();
    let without = |name: &str, pointer: &str, field: &str| {
        changed(name, |e| {
            e.pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(field);
        })
    };
    let cases = [
        ("start-backup", without("start-backup", "", "backup_id")),
        (
            "restore",
            changed("restore", |e| e["target"] = json!({"type": "disk"})),
        ),
        (
            "poll-job",
            changed("poll-job", |e| e["next_wait_seconds"] = json!("soon")),
        ),
        ("verify", json!({"mode": "everything"})),
        (
            "verify",
            json!({"mode": "run", "document": {"application": "shop"}}),
        ),
        ("pipeline-action", json!({"CodePipeline.job": {"data": {}}})),
        ("pipeline-action", json!({"id": "job-without-envelope"})),
        // The job id is what the answer needs: without it there is no job to answer.
        (
            "pipeline-action",
            without("pipeline-action", "/CodePipeline.job", "id"),
        ),
        (
            "pipeline-action",
            changed("pipeline-action", |e| {
                e["CodePipeline.job"]["id"] = json!("  ")
            }),
        ),
        (
            "pipeline-action",
            without(
                "pipeline-action",
                "/CodePipeline.job/data",
                "inputArtifacts",
            ),
        ),
        // Prune and drill run on the schedule's event only; a policy in the payload is not one.
        (
            "prune",
            json!({"keep_last": 3, "max_age_days": 30, "dry_run": true}),
        ),
        ("prune", json!({"max_age_days": 30})),
        (
            "prune",
            changed("prune", |e| e["detail-type"] = json!("Object Created")),
        ),
        ("prune", changed("prune", |e| e["source"] = json!("aws.s3"))),
        ("prune", without("prune", "", "detail")),
        ("guard", without("guard", "/detail", "execution-id")),
        ("guard", without("guard", "/detail", "pipeline")),
        ("guard", without("guard", "/detail", "state")),
        (
            "guard",
            changed("guard", |e| e["source"] = json!("aws.codedeploy")),
        ),
        (
            "guard",
            changed("guard", |e| e["detail"]["execution-id"] = json!(42)),
        ),
        (
            "guard",
            changed("guard", |e| e["detail"]["stage"] = json!(" ")),
        ),
        (
            "guard",
            json!({"detail-type": "Scheduled Event", "source": "aws.events"}),
        ),
        ("guard", event("prune")),
        ("drill", json!({"volume_wait_seconds": "ten"})),
        ("drill", json!({"applications": ["shop"]})),
        ("drill", json!({"application": 7})),
        ("drill", event("guard")),
        ("drill", without("drill", "", "detail-type")),
        ("nothing", json!({})),
    ];
    for (function, payload) in cases {
        let err = rt
            .block_on(invoke(&ctx, function, payload.clone()))
            .unwrap_err();
        assert_eq!(
            err.error_type(),
            "InvalidInput",
            "{function} {payload}: {err}"
        );
    }
    assert_eq!(aws.calls(), Vec::<String>::new(), "nothing was called");
    let missing = Context::new(closed_port_shared(), Config::new("", "backstop"))
        .err()
        .unwrap();
    assert_eq!(missing.error_type(), "InvalidInput");
    let bad_prefix = Context::new(closed_port_shared(), Config::new("backups", "../x"))
        .err()
        .unwrap();
    assert_eq!(bad_prefix.error_type(), "InvalidInput");
}

/// The run documents of `examples/pipeline.yaml`: the Step Functions action's Literal input and
/// the Lambda action's UserParameters, each once CodePipeline has put in its variables.
#[test]
fn the_sample_pipeline_passes_valid_run_documents() {
    let path = format!("{}/examples/pipeline.yaml", crate::support::root());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let key = line.trim();
        if key != "Input: |" && key != "UserParameters: |" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        let json_text = block
            .join("\n")
            .replace("#{SourceVariables.CommitId}", "3f2a9c1")
            .replace("#{codepipeline.PipelineExecutionId}", "0f1e2d3c-aaaa");
        let doc = RunDocument::from_json(&json_text)
            .unwrap_or_else(|e| panic!("{key} in {path}: {e}: {json_text}"));
        assert_eq!(doc.version.commit.as_deref(), Some("3f2a9c1"));
        assert_eq!(
            doc.version.pipeline_execution_id.as_deref(),
            Some("0f1e2d3c-aaaa")
        );
        found.push(key.to_string());
    }
    assert_eq!(found, ["Input: |", "UserParameters: |"]);
}
